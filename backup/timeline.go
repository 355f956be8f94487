package backup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// SegmentSize is the WAL segment size nodeha's archive assumes:
// PostgreSQL's and Spilo's default (initdb --wal-segsize 16).
const SegmentSize = 16 << 20

// LSN is a WAL position.
type LSN uint64

// ParseLSN reads "X/Y".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("backup: %q is not an LSN", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("backup: %q is not an LSN", s)
	}
	return LSN(h<<32 | l), nil
}

// segment numbers a WAL segment by its position (timeline apart).
type segment uint64

func segmentOf(l LSN) segment { return segment(uint64(l) / SegmentSize) }

// segmentFile is the file name of segment n on timeline tl.
func segmentFile(tl int, n segment) string {
	per := uint64(0x100000000 / SegmentSize)
	return fmt.Sprintf("%08X%08X%08X", tl, uint64(n)/per, uint64(n)%per)
}

// parseSegmentFile is segmentFile's inverse.
func parseSegmentFile(name string) (tl int, n segment, ok bool) {
	if !IsSegment(name) {
		return 0, 0, false
	}
	t, _ := strconv.ParseUint(name[:8], 16, 32)
	log, _ := strconv.ParseUint(name[8:16], 16, 32)
	seg, _ := strconv.ParseUint(name[16:24], 16, 32)
	per := uint64(0x100000000 / SegmentSize)
	return int(t), segment(log*per + seg), true
}

// Switch is one line of a timeline history file: timeline TL ended at LSN.
type Switch struct {
	TL  int
	End LSN
}

// ParseHistory reads a TLI.history file: "parentTLI<TAB>switchpoint<TAB>reason" lines.
func ParseHistory(b []byte) ([]Switch, error) {
	var out []Switch
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("backup: bad history line %q", line)
		}
		tl, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("backup: bad history line %q", line)
		}
		end, err := ParseLSN(f[1])
		if err != nil {
			return nil, err
		}
		out = append(out, Switch{TL: tl, End: end})
	}
	return out, nil
}

// Timeline is the newest timeline of the archive and the history that
// leads to it.
type Timeline struct {
	TL      int
	History []Switch // its ancestors, oldest first
}

// timelineOf returns which timeline holds segment n on the way to t.TL:
// the segment holding a switch point is read from the next timeline, which
// starts with a copy of it.
func (t Timeline) timelineOf(n segment) int {
	for i, s := range t.History {
		if n < segmentOf(s.End) {
			return t.History[i].TL
		}
	}
	return t.TL
}

// Contains says whether a backup (taken on timeline tl, consistent at end)
// lies on the way to t.TL: on t.TL itself, or on an ancestor before the
// point where the way left it.
func (t Timeline) Contains(tl int, end LSN) bool {
	if tl == t.TL {
		return true
	}
	for _, s := range t.History {
		if s.TL == tl {
			return end <= s.End
		}
	}
	return false
}

// Newest reads the archive's newest timeline and its history.
func (a *Archive) Newest(ctx context.Context) (Timeline, error) {
	objs, err := a.Store.List(ctx, walDir)
	if err != nil {
		return Timeline{}, err
	}
	t := Timeline{TL: 1}
	newestHistory := ""
	for _, o := range objs {
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, walDir), ext)
		if tl, _, ok := parseSegmentFile(name); ok && tl > t.TL {
			t.TL = tl
		}
		if strings.HasSuffix(name, ".history") && len(name) == 16 {
			if tl, err := strconv.ParseUint(name[:8], 16, 32); err == nil && int(tl) >= t.TL {
				t.TL, newestHistory = int(tl), name
			}
		}
	}
	if newestHistory != "" && newestHistory[:8] == fmt.Sprintf("%08X", t.TL) {
		b, err := a.read(ctx, walDir+newestHistory+ext)
		if err != nil {
			return t, err
		}
		if t.History, err = ParseHistory(b); err != nil {
			return t, err
		}
	}
	return t, nil
}

// Usable are the backups one can restore on the way to the archive's
// newest timeline, oldest first: a backup taken on a timeline the cluster
// later left, after the point where it left, is on another branch (a
// point-in-time restore went back before it).
func Usable(bs []Info, t Timeline) []Info {
	var out []Info
	for _, b := range bs {
		end, err := ParseLSN(b.EndLSN)
		if err != nil {
			end, err = ParseLSN(b.StartLSN)
		}
		if err == nil && t.Contains(b.Timeline, end) {
			out = append(out, b)
		}
	}
	return out
}

// Gaps is what Verify found.
type Gaps struct {
	From, To string   // the first and last segment checked
	Missing  []string // segments not archived between them
}

// Verify checks that the archive holds every WAL segment from the start of
// the oldest usable backup to the newest segment archived, along the
// newest timeline's history: what a restore to the newest point needs.
func (a *Archive) Verify(ctx context.Context) (Gaps, error) {
	t, err := a.Newest(ctx)
	if err != nil {
		return Gaps{}, err
	}
	bs, err := a.Backups(ctx)
	if err != nil {
		return Gaps{}, err
	}
	bs = Usable(bs, t)
	if len(bs) == 0 {
		return Gaps{}, fmt.Errorf("backup: no base backup to verify the WAL from")
	}
	_, objs, err := a.WAL(ctx)
	if err != nil {
		return Gaps{}, err
	}
	have := map[string]bool{}
	var last segment
	for _, o := range objs {
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, walDir), ext)
		if tl, n, ok := parseSegmentFile(name); ok {
			have[name] = true
			if t.timelineOf(n) == tl && n > last {
				last = n
			}
		}
	}
	_, first, ok := parseSegmentFile(bs[0].StartWAL)
	if !ok {
		return Gaps{}, fmt.Errorf("backup: backup %s has no start segment", bs[0].Name)
	}
	g := Gaps{From: segmentFile(t.timelineOf(first), first), To: segmentFile(t.timelineOf(last), last)}
	for n := first; n <= last; n++ {
		if name := segmentFile(t.timelineOf(n), n); !have[name] {
			g.Missing = append(g.Missing, name)
		}
	}
	sort.Strings(g.Missing)
	return g, nil
}

// UsableBackups lists the backups on the way to the archive's newest
// timeline, oldest first (see Usable).
func (a *Archive) UsableBackups(ctx context.Context) ([]Info, error) {
	t, err := a.Newest(ctx)
	if err != nil {
		return nil, err
	}
	bs, err := a.Backups(ctx)
	if err != nil {
		return nil, err
	}
	return Usable(bs, t), nil
}

// CanReplay says whether a restore of backup b can follow t's history out
// of the archive: for every switch of timeline after b's start, the new
// timeline's copy of the segment holding the switch point must be
// archived. Without it PostgreSQL reads the old timeline's segment
// instead and replays past the switch point, onto a branch the cluster
// left (right after a failover or a restore, until the new primary's
// first segment is archived).
func (a *Archive) CanReplay(ctx context.Context, t Timeline, b Info) error {
	_, start, ok := parseSegmentFile(b.StartWAL)
	if !ok {
		return fmt.Errorf("backup: backup %s has no start segment", b.Name)
	}
	for i, s := range t.History {
		seg := segmentOf(s.End)
		if seg < start {
			continue
		}
		next := t.TL
		if i+1 < len(t.History) {
			next = t.History[i+1].TL
		}
		name := segmentFile(next, seg)
		if _, err := a.Store.Stat(ctx, walDir+name+ext); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("backup: %s, the first segment of timeline %d, is not archived yet", name, next)
			}
			return err
		}
	}
	return nil
}

// superseded says which newer timeline (its history file's name), if any,
// left segment name's timeline at or before that segment. Such a segment
// holds WAL past the point where the cluster went on elsewhere (a deposed
// primary's last writes, archived by it or by a replica under archive_mode
// always): PostgreSQL asks for the newer timeline's copy first, and when
// that is not archived yet it would take this one and replay onto a
// branch the cluster left, for good. Refused, it streams from the primary
// or waits for the newer copy instead. One HEAD per call in the common
// case (no newer timeline).
func (a *Archive) superseded(ctx context.Context, name string) (string, error) {
	tl, n, ok := parseSegmentFile(name)
	if !ok {
		return "", nil
	}
	newest := ""
	for next := tl + 1; ; next++ {
		h := fmt.Sprintf("%08X.history", next)
		if _, err := a.Store.Stat(ctx, walDir+h+ext); errors.Is(err, ErrNotFound) {
			break
		} else if err != nil {
			return "", err
		}
		newest = h
	}
	if newest == "" {
		return "", nil
	}
	b, err := a.read(ctx, walDir+newest+ext)
	if err != nil {
		return "", err
	}
	hist, err := ParseHistory(b)
	if err != nil {
		return "", err
	}
	for _, s := range hist {
		if s.TL == tl && n >= segmentOf(s.End) {
			return newest, nil
		}
	}
	return "", nil
}
