// Package e2e holds nodeha's end-to-end tests (build tag e2e): the real
// nodeha binary, the real Docker engine, Patroni and PostgreSQL in the test
// image and the embedded etcd, on three simulated hosts
// (internal/testcluster). Run them with `make test`.
package e2e
