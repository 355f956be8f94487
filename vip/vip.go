// Package vip holds a floating IP address on one interface of this host
// while this host is the primary, so that a client that knows one address
// only (and an old driver, a BI tool) reaches the primary on an L2
// network: what vip-manager does beside Patroni, without a daemon more.
//
// Holding means the address is on the interface (netlink RTM_NEWADDR)
// and the network was told so (gratuitous ARP, three times); releasing
// takes it off. Both are idempotent. IPv4 only: IPv6 would need
// unsolicited neighbour advertisements, which nodeha does not send.
//
// Usage:
//
//	v, err := vip.New(netip.MustParsePrefix("10.0.0.100/24"), "eth0")
//	err = v.Hold()    // this host became the primary
//	err = v.Release() // it is not any more, or nodeha stops
package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"golang.org/x/sys/unix"
)

// VIP is a floating address on an interface.
type VIP struct {
	Prefix netip.Prefix // the address and its network, e.g. 10.0.0.100/24
	Iface  *net.Interface
}

// New checks the address and finds the interface.
func New(p netip.Prefix, iface string) (*VIP, error) {
	if !p.Addr().Is4() {
		return nil, fmt.Errorf("%s: only IPv4 addresses can float (gratuitous ARP)", p)
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", iface, err)
	}
	return &VIP{Prefix: p, Iface: ifi}, nil
}

// InterfaceOf names the interface that has ip.
func InterfaceOf(ip netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifi := range ifs {
		if has, _ := hasAddr(&ifi, ip); has {
			return ifi.Name, nil
		}
	}
	return "", fmt.Errorf("no interface has %s", ip)
}

// hasAddr reports whether ip is one of ifi's addresses.
func hasAddr(ifi *net.Interface, ip netip.Addr) (bool, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == ip {
				return true, nil
			}
		}
	}
	return false, nil
}

func (v *VIP) message() *rtnetlink.AddressMessage {
	ip := net.IP(v.Prefix.Addr().AsSlice())
	ones := v.Prefix.Bits()
	mask := net.CIDRMask(ones, 32)
	brd := make(net.IP, 4)
	for i := range brd {
		brd[i] = ip[i] | ^mask[i]
	}
	return &rtnetlink.AddressMessage{
		Family:       unix.AF_INET,
		PrefixLength: uint8(ones),
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Index:        uint32(v.Iface.Index),
		Attributes:   &rtnetlink.AddressAttributes{Address: ip, Local: ip, Broadcast: brd},
	}
}

// Hold puts the address on the interface (already there is fine) and
// announces it with gratuitous ARP, so switches and neighbours send its
// traffic here at once.
func (v *VIP) Hold() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("vip: netlink: %w", err)
	}
	defer c.Close()
	if err := c.Address.New(v.message()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("vip: add %s to %s: %w", v.Prefix, v.Iface.Name, err)
	}
	return v.announce()
}

// announce sends three gratuitous ARP requests (sender and target the
// address, to broadcast), 100 ms apart.
func (v *VIP) announce() error {
	c, err := arp.Dial(v.Iface)
	if err != nil {
		return fmt.Errorf("vip: gratuitous ARP on %s: %w", v.Iface.Name, err)
	}
	defer c.Close()
	ip := v.Prefix.Addr()
	p, err := arp.NewPacket(arp.OperationRequest, v.Iface.HardwareAddr, ip, ethernet.Broadcast, ip)
	if err != nil {
		return fmt.Errorf("vip: gratuitous ARP: %w", err)
	}
	for i := 0; i < 3; i++ {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
			return fmt.Errorf("vip: gratuitous ARP on %s: %w", v.Iface.Name, err)
		}
	}
	return nil
}

// Release takes the address off the interface (not there is fine).
func (v *VIP) Release() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("vip: netlink: %w", err)
	}
	defer c.Close()
	if err := c.Address.Delete(v.message()); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("vip: remove %s from %s: %w", v.Prefix, v.Iface.Name, err)
	}
	return nil
}

// Present reports whether the address is on the interface now.
func (v *VIP) Present() (bool, error) { return hasAddr(v.Iface, v.Prefix.Addr()) }
