// Package backup owns nodeha's continuous WAL archive and base backups: a
// Store (an S3-compatible bucket or a directory, e.g. an NFS mount), the
// object layout and codec (zstd, then age encryption when a key is set),
// and the operations PostgreSQL and Patroni run inside the Spilo container
// through nodeha's own binary: WAL push and fetch (archive_command,
// restore_command), base backup push (pg_basebackup) and fetch (Patroni's
// custom bootstrap), plus list and retention for the host side.
//
// The layout under the target's prefix:
//
//	cluster.json                  the system identifier the archive belongs to
//	wal/<file>.nha                each WAL segment, history and backup file
//	basebackups/<name>/part-NNNNN.nha  the tar stream of pg_basebackup, in parts
//	basebackups/<name>/backup.json     written last: a backup exists once it is there
//
// Spilo's images ship WAL-G, but nodeha drives its own archive: the same
// static binary runs in every image generation, and its tests run it for
// real (no WAL-G can be built or installed where nodeha is tested).
package backup
