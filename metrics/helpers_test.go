package metrics_test

import (
	"crypto/tls"
	"net/netip"
	"testing"

	"github.com/nodeha/nodeha/trust"
)

func mustAddrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func mustPair(t *testing.T, crt, key []byte) tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func otherReader(t *testing.T) ([]byte, []byte) {
	t.Helper()
	id, err := trust.FromToken(trust.GenerateToken())
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := id.IssueMetricsReader("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	return crt, key
}
