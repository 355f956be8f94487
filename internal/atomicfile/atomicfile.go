// Package atomicfile replaces files so that a crash leaves either the old
// content or the new, never a mix or a torn file: the new content goes to a
// temporary file in the same directory, created with its final mode (a
// secret is never readable by others, not even for a moment), is fsynced,
// renamed over the target, and the directory is fsynced so the rename
// itself survives a power loss. It is nodeha's one file writer.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode mode.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return write(path, mode, -1, -1, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileOwned is WriteFile with the file owned by uid:gid.
func WriteFileOwned(path string, data []byte, mode os.FileMode, uid, gid int) error {
	return write(path, mode, uid, gid, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Stream replaces path with what fill writes, mode mode; when fill fails,
// path is left as it was.
func Stream(path string, mode os.FileMode, fill func(io.Writer) error) error {
	return write(path, mode, -1, -1, fill)
}

func write(path string, mode os.FileMode, uid, gid int, fill func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	// CreateTemp makes the file 0600; a wider mode is set before any byte
	// is written, and a narrower one never comes after the content.
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
