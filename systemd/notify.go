// Package systemd owns nodeha's integration with systemd: the unit and the
// settings file that `nodeha install` writes (unit.go), and sd_notify
// (READY, WATCHDOG, STOPPING, STATUS) through github.com/coreos/go-systemd.
// Outside systemd (no NOTIFY_SOCKET) every notify call is a no-op.
package systemd

import (
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier reports the service's state to systemd.
type Notifier struct {
	watchdog time.Duration
}

// NewNotifier reads NOTIFY_SOCKET and WATCHDOG_USEC from the environment.
func NewNotifier() *Notifier {
	d, _ := daemon.SdWatchdogEnabled(false)
	return &Notifier{watchdog: d}
}

// Ready tells systemd that start-up is complete.
func (n *Notifier) Ready() { daemon.SdNotify(false, daemon.SdNotifyReady) }

// Stopping tells systemd that shutdown has begun.
func (n *Notifier) Stopping() { daemon.SdNotify(false, daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status` shows.
func (n *Notifier) Status(s string) { daemon.SdNotify(false, "STATUS="+s) }

// Watchdog pings the service watchdog.
func (n *Notifier) Watchdog() { daemon.SdNotify(false, daemon.SdNotifyWatchdog) }

// WatchdogInterval is the unit's WatchdogSec, 0 when the watchdog is off.
func (n *Notifier) WatchdogInterval() time.Duration { return n.watchdog }
