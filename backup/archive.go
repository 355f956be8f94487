package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Archive is a Store with nodeha's layout and codec.
type Archive struct {
	Store    Store
	codec    *codec
	partSize int
	target   string
}

// New opens the archive s names.
func New(s *Settings) (*Archive, error) {
	st, err := Open(s)
	if err != nil {
		return nil, err
	}
	c, err := newCodec(s.Identity)
	if err != nil {
		return nil, err
	}
	part := s.PartSize
	if part <= 0 {
		part = 64 << 20
	}
	return &Archive{Store: st, codec: c, partSize: part, target: s.Target}, nil
}

const (
	clusterKey = "cluster.json"
	walDir     = "wal/"
	backupDir  = "basebackups/"
	infoName   = "backup.json"
	ext        = ".nha"
)

// segmentName is a WAL segment's file name: timeline, log, segment.
var segmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)

// IsSegment says whether name is a whole WAL segment's.
func IsSegment(name string) bool { return segmentName.MatchString(name) }

// clusterInfo ties an archive to one PostgreSQL cluster.
type clusterInfo struct {
	SystemID string    `json:"system_identifier"`
	Since    time.Time `json:"since"`
}

// claim makes sure the archive belongs to the cluster with system
// identifier sysid, recording it on first use: two clusters' WAL mixed in
// one place would make both unrestorable.
func (a *Archive) claim(ctx context.Context, sysid uint64) error {
	id := strconv.FormatUint(sysid, 10)
	r, err := a.Store.Get(ctx, clusterKey)
	if errors.Is(err, ErrNotFound) {
		b, _ := json.Marshal(clusterInfo{SystemID: id, Since: time.Now().UTC()})
		return a.Store.Put(ctx, clusterKey, b)
	} else if err != nil {
		return err
	}
	defer r.Close()
	var ci clusterInfo
	if err := json.NewDecoder(r).Decode(&ci); err != nil {
		return fmt.Errorf("backup: %s: %w", clusterKey, err)
	}
	if ci.SystemID != id {
		return fmt.Errorf("backup: the archive at %s belongs to the PostgreSQL cluster with system identifier %s, this one is %s: refusing to mix them (use another prefix, or restore from it)", a.target, ci.SystemID, id)
	}
	return nil
}

// segmentSystemID reads the system identifier from a WAL segment's long
// page header (XLogLongPageHeaderData.xlp_sysid, at byte 24).
func segmentSystemID(b []byte) (uint64, bool) {
	if len(b) < 32 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[24:32]), true
}

// PushWAL archives the WAL file at path (archive_command's %p). Pushing a
// file that is already archived with the same content succeeds, so a
// retry, or every host archiving (archive_mode always), is harmless;
// different content under the same name is refused.
func (a *Archive) PushWAL(ctx context.Context, path string) error {
	name := filepath.Base(path)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if IsSegment(name) {
		if sysid, ok := segmentSystemID(data); ok {
			if err := a.claim(ctx, sysid); err != nil {
				return err
			}
		}
	}
	key := walDir + name + ext
	if _, err := a.Store.Stat(ctx, key); err == nil {
		have, err := a.read(ctx, key)
		if err != nil {
			return err
		}
		if bytes.Equal(have, data) {
			return nil
		}
		return fmt.Errorf("backup: %s is already archived with other content: refusing to overwrite it", name)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	enc, err := a.codec.encode(data)
	if err != nil {
		return err
	}
	return a.Store.Put(ctx, key, enc)
}

func (a *Archive) read(ctx context.Context, key string) ([]byte, error) {
	r, err := a.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	d, err := a.codec.decoder(r)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	b, err := io.ReadAll(d)
	if err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", key, err)
	}
	return b, nil
}

// FetchWAL writes the archived WAL file name to dest (restore_command's %f
// and %p); ErrNotFound when it is not archived, or when a newer timeline
// in the archive left name's timeline before or inside that segment (see
// superseded).
func (a *Archive) FetchWAL(ctx context.Context, name, dest string) error {
	if IsSegment(name) {
		if by, err := a.superseded(ctx, name); err != nil {
			return err
		} else if by != "" {
			return fmt.Errorf("backup: %s: timeline %s left that timeline before its end: %w", name, by, ErrNotFound)
		}
	}
	b, err := a.read(ctx, walDir+name+ext)
	if err != nil {
		return err
	}
	tmp := dest + ".nodeha-tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// WALStatus is what the archive holds of the WAL.
type WALStatus struct {
	Segments int       `json:"segments"`
	Bytes    int64     `json:"stored_bytes"`
	Newest   string    `json:"newest,omitempty"` // the newest segment archived
	NewestAt time.Time `json:"newest_at,omitzero"`
}

// WAL lists the archived WAL.
func (a *Archive) WAL(ctx context.Context) (WALStatus, []Object, error) {
	objs, err := a.Store.List(ctx, walDir)
	if err != nil {
		return WALStatus{}, nil, err
	}
	var st WALStatus
	for _, o := range objs {
		st.Bytes += o.Size
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, walDir), ext)
		if !IsSegment(name) {
			continue
		}
		st.Segments++
		if st.Newest == "" || segmentLess(st.Newest, name) {
			st.Newest, st.NewestAt = name, o.Modified
		}
	}
	return st, objs, nil
}

// segmentLess orders segment names by position in the WAL, then timeline.
func segmentLess(a, b string) bool {
	if a[8:] != b[8:] {
		return a[8:] < b[8:]
	}
	return a[:8] < b[:8]
}

// SortBackups orders backups oldest first.
func SortBackups(bs []Info) {
	sort.Slice(bs, func(i, j int) bool { return bs[i].Finish.Before(bs[j].Finish) })
}
