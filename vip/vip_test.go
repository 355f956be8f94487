package vip_test

import (
	"net/netip"
	"testing"

	"github.com/nodeha/nodeha/vip"
)

func TestFindsTheInterfaceAndTheAddress(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	name, err := vip.InterfaceOf(lo)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vip.New(netip.PrefixFrom(lo, 8), name)
	if err != nil {
		t.Fatal(err)
	}
	if on, err := v.Present(); err != nil || !on {
		t.Errorf("127.0.0.1 on %s: %v %v, want present", name, on, err)
	}
	other, _ := vip.New(netip.MustParsePrefix("127.254.1.1/8"), name)
	if on, err := other.Present(); err != nil || on {
		t.Errorf("127.254.1.1 on %s: %v %v, want absent", name, on, err)
	}
	if _, err := vip.InterfaceOf(netip.MustParseAddr("192.0.2.77")); err == nil {
		t.Error("an address no interface has was found")
	}
	if _, err := vip.New(netip.MustParsePrefix("fd00::1/64"), name); err == nil {
		t.Error("an IPv6 floating address was accepted")
	}
}
