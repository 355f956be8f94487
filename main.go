// Command nodeha runs one host of a Patroni/Spilo HA PostgreSQL cluster: an
// embedded etcd member, Patroni's postgres.yml, the Spilo container and a
// health socket, in one process. See README.md.
package main

import (
	"os"

	"github.com/nodeha/nodeha/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
