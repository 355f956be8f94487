package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Info describes one base backup (backup.json).
type Info struct {
	Name      string    `json:"name"`
	Start     time.Time `json:"start"`
	Finish    time.Time `json:"finish"`
	StartLSN  string    `json:"start_lsn"`
	EndLSN    string    `json:"end_lsn,omitempty"`
	Timeline  int       `json:"timeline"`
	StartWAL  string    `json:"start_wal"`
	From      string    `json:"from"` // primary or standby, as backup_label says
	Host      string    `json:"host"`
	PGVersion string    `json:"pg_version,omitempty"`
	SystemID  string    `json:"system_identifier,omitempty"`
	Size      int64     `json:"size"`        // of the tar stream
	Stored    int64     `json:"stored_size"` // compressed (and encrypted)
	Parts     int       `json:"parts"`
}

// NewBackupName names a backup taken now: sortable, unique to the second.
func NewBackupName(now time.Time) string { return "base_" + now.UTC().Format("20060102T150405Z") }

func partKey(name string, i int) string {
	return fmt.Sprintf("%s%s/part-%05d%s", backupDir, name, i, ext)
}

// PushBackup stores the tar stream of `pg_basebackup -D - -Ft` as backup
// info.Name, in parts, reading backup_label, pg_control and the manifest as
// they go by. Once the stream ends, ended says whether its writer
// succeeded (pg_basebackup's exit); only then is backup.json written: a
// backup exists once every part is stored and its maker said it is whole.
func (a *Archive) PushBackup(ctx context.Context, stream io.Reader, info Info, ended func() error) (Info, error) {
	claimed := info.SystemID != ""
	if claimed {
		// Before the first part: another cluster's backup leaves nothing.
		sysid, _ := strconv.ParseUint(info.SystemID, 10, 64)
		if err := a.claim(ctx, sysid); err != nil {
			return info, err
		}
	}
	pr, pw := io.Pipe()
	parsed := make(chan error, 1)
	go func() {
		err := inspectTar(pr, &info)
		_, _ = io.Copy(io.Discard, pr)
		parsed <- err
	}()
	in := io.TeeReader(stream, pw)
	// Two buffers: the next part is read from pg_basebackup while the
	// last one is compressed, encrypted and uploaded.
	free := make(chan []byte, 2)
	free <- make([]byte, a.partSize)
	free <- make([]byte, a.partSize)
	full := make(chan []byte)
	uploaded := make(chan error, 1)
	go func() {
		var err error
		for b := range full {
			if err == nil {
				var enc []byte
				if enc, err = a.codec.encode(b); err == nil {
					if err = a.Store.Put(ctx, partKey(info.Name, info.Parts), enc); err == nil {
						info.Parts++
						info.Size += int64(len(b))
						info.Stored += int64(len(enc))
					}
				}
			}
			free <- b[:cap(b)]
		}
		uploaded <- err
	}()
	var readErr error
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			readErr = ctx.Err()
		}
		if readErr != nil {
			break
		}
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			full <- buf[:n]
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("backup: read the base backup: %w", err)
			break
		}
	}
	close(full)
	if err := errors.Join(readErr, <-uploaded); err != nil {
		pw.CloseWithError(err)
		<-parsed
		return info, err
	}
	pw.Close()
	if ended != nil {
		if err := ended(); err != nil {
			<-parsed
			return info, err
		}
	}
	if err := <-parsed; err != nil {
		return info, err
	}
	if info.Size == 0 {
		return info, errors.New("backup: pg_basebackup wrote nothing")
	}
	if info.StartLSN == "" {
		return info, errors.New("backup: the base backup has no backup_label")
	}
	if !claimed && info.SystemID != "" { // read from pg_control on the way
		sysid, _ := strconv.ParseUint(info.SystemID, 10, 64)
		if err := a.claim(ctx, sysid); err != nil {
			return info, err
		}
	}
	info.Finish = time.Now().UTC()
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := a.Store.Put(ctx, backupDir+info.Name+"/"+infoName, b); err != nil {
		return info, err
	}
	return info, nil
}

// inspectTar reads what a base backup says about itself.
func inspectTar(r io.Reader, info *Info) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("backup: the base backup is not a tar stream: %w", err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "backup_label":
			b, _ := io.ReadAll(io.LimitReader(tr, 64<<10))
			parseLabel(string(b), info)
		case "global/pg_control":
			b := make([]byte, 8)
			if _, err := io.ReadFull(tr, b); err == nil {
				info.SystemID = strconv.FormatUint(binary.LittleEndian.Uint64(b), 10)
			}
		case "PG_VERSION":
			b, _ := io.ReadAll(io.LimitReader(tr, 64))
			info.PGVersion = strings.TrimSpace(string(b))
		case "backup_manifest":
			var m struct {
				WALRanges []struct {
					Timeline int    `json:"Timeline"`
					EndLSN   string `json:"End-LSN"`
				} `json:"WAL-Ranges"`
			}
			if err := json.NewDecoder(tr).Decode(&m); err == nil && len(m.WALRanges) > 0 {
				info.EndLSN = m.WALRanges[len(m.WALRanges)-1].EndLSN
			}
		}
	}
}

// parseLabel reads backup_label's lines, e.g.
// "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)".
func parseLabel(label string, info *Info) {
	sc := bufio.NewScanner(strings.NewReader(label))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		switch k {
		case "START WAL LOCATION":
			lsn, file, _ := strings.Cut(v, " (file ")
			info.StartLSN, info.StartWAL = lsn, strings.TrimSuffix(file, ")")
		case "BACKUP FROM":
			info.From = v
		case "START TIMELINE":
			info.Timeline, _ = strconv.Atoi(v)
		case "START TIME":
			if t, err := time.Parse("2006-01-02 15:04:05 MST", v); err == nil {
				info.Start = t.UTC()
			}
		}
	}
}

// Backups lists the complete backups, oldest first.
func (a *Archive) Backups(ctx context.Context) ([]Info, error) {
	objs, err := a.Store.List(ctx, backupDir)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/"+infoName) {
			continue
		}
		b, err := a.readRaw(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		var in Info
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, fmt.Errorf("backup: %s: %w", o.Key, err)
		}
		out = append(out, in)
	}
	SortBackups(out)
	return out, nil
}

func (a *Archive) readRaw(ctx context.Context, key string) ([]byte, error) {
	r, err := a.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Backup returns the backup called name.
func (a *Archive) Backup(ctx context.Context, name string) (Info, error) {
	b, err := a.readRaw(ctx, backupDir+name+"/"+infoName)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Info{}, fmt.Errorf("backup: no backup called %q in %s", name, a.target)
		}
		return Info{}, err
	}
	var in Info
	err = json.Unmarshal(b, &in)
	return in, err
}

// Choose picks the backup to restore from: the one named, else the newest
// that finished before target (the newest of all for a zero target).
func Choose(bs []Info, name string, target time.Time) (Info, error) {
	if name != "" {
		for _, b := range bs {
			if b.Name == name {
				if !target.IsZero() && !b.Finish.Before(target) {
					return Info{}, fmt.Errorf("backup %s finished at %s, after the restore time %s", name, b.Finish.Format(time.RFC3339), target.Format(time.RFC3339))
				}
				return b, nil
			}
		}
		return Info{}, fmt.Errorf("no backup called %q", name)
	}
	if len(bs) == 0 {
		return Info{}, errors.New("the archive holds no base backup (take one with nodeha backup)")
	}
	if target.IsZero() {
		return bs[len(bs)-1], nil
	}
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].Finish.Before(target) {
			return bs[i], nil
		}
	}
	return Info{}, fmt.Errorf("the restore time %s is before the oldest point one can restore to, %s (the end of backup %s)",
		target.Format(time.RFC3339), bs[0].Finish.Format(time.RFC3339), bs[0].Name)
}

// FetchBackup unpacks backup name into dir, which must be empty or absent.
func (a *Archive) FetchBackup(ctx context.Context, name, dir string) (Info, error) {
	info, err := a.Backup(ctx, name)
	if err != nil {
		return info, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return info, fmt.Errorf("backup: %s is not empty: refusing to restore over it", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < info.Parts; i++ {
			b, err := a.read(ctx, partKey(name, i))
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(b); err != nil {
				return
			}
		}
		pw.Close()
	}()
	err = untar(pr, dir)
	pr.CloseWithError(err)
	return info, err
}

// untar writes a tar stream under dir: directories, regular files and
// symbolic links, nothing outside dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("backup: unpack: %w", err)
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("backup: unpack: %q leaves the data directory", h.Name)
		}
		p := filepath.Join(dir, name)
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return fmt.Errorf("backup: unpack: %w", err)
			}
			if err := os.Chmod(p, mode|0o700); err != nil {
				return fmt.Errorf("backup: unpack: %w", err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return fmt.Errorf("backup: unpack: %w", err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return fmt.Errorf("backup: unpack: %w", err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("backup: unpack %s: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return fmt.Errorf("backup: unpack: %w", err)
			}
		default:
			return fmt.Errorf("backup: unpack: %q has an unexpected type %c", h.Name, h.Typeflag)
		}
	}
}

// Prune keeps the newest keep backups (at least one) and every backup
// younger than maxAge (0: age keeps none), deletes the others and the WAL
// that only they needed. It returns the backups deleted.
func (a *Archive) Prune(ctx context.Context, keep int, maxAge time.Duration, now time.Time) ([]string, error) {
	bs, err := a.Backups(ctx)
	if err != nil {
		return nil, err
	}
	if keep < 1 {
		keep = 1
	}
	var gone []string
	oldestKept := -1
	for i, b := range bs {
		young := maxAge > 0 && now.Sub(b.Finish) < maxAge
		if i >= len(bs)-keep || young {
			if oldestKept < 0 {
				oldestKept = i
			}
			continue
		}
		// Its backup.json first: a half-deleted backup is no backup.
		if err := a.Store.Delete(ctx, backupDir+b.Name+"/"+infoName); err != nil {
			return gone, err
		}
		for p := 0; p < b.Parts; p++ {
			if err := a.Store.Delete(ctx, partKey(b.Name, p)); err != nil {
				return gone, err
			}
		}
		gone = append(gone, b.Name)
	}
	if oldestKept < 0 || len(gone) == 0 {
		return gone, nil
	}
	// WAL before the oldest kept backup's start restores nothing kept.
	first := bs[oldestKept].StartWAL
	_, objs, err := a.WAL(ctx)
	if err != nil {
		return gone, err
	}
	for _, o := range objs {
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, walDir), ext)
		if len(name) < 24 || !segmentName.MatchString(name[:24]) || strings.HasSuffix(name, ".history") {
			continue
		}
		if name[8:24] < first[8:24] {
			if err := a.Store.Delete(ctx, o.Key); err != nil {
				return gone, err
			}
		}
	}
	return gone, nil
}

func jsonIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
