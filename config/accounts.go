package config

import (
	"fmt"
	"os/user"
	"strconv"
)

// AccountClashes says which host accounts share the uid and gid the
// container's postgres user owns its files with: such an account can read
// PGDATA and the secrets nodeha gives PostgreSQL. lookupUser and
// lookupGroup return the name of an id, an error when there is none (nil:
// the host's /etc/passwd and /etc/group).
func AccountClashes(uid, gid int, lookupUser, lookupGroup func(id string) (string, error)) []string {
	if lookupUser == nil {
		lookupUser = func(id string) (string, error) {
			u, err := user.LookupId(id)
			if err != nil {
				return "", err
			}
			return u.Username, nil
		}
	}
	if lookupGroup == nil {
		lookupGroup = func(id string) (string, error) {
			g, err := user.LookupGroupId(id)
			if err != nil {
				return "", err
			}
			return g.Name, nil
		}
	}
	var out []string
	if name, err := lookupUser(strconv.Itoa(uid)); err == nil {
		out = append(out, fmt.Sprintf("uid %d is the host account %q: it can read what the container's postgres user owns here (PGDATA, the TLS keys and backup credentials nodeha gives PostgreSQL); give that account another uid (usermod -u), or set NODEHA_POSTGRES_UID if the image's postgres has another", uid, name))
	}
	if name, err := lookupGroup(strconv.Itoa(gid)); err == nil {
		out = append(out, fmt.Sprintf("gid %d is the host group %q: its members can read what the container's postgres group may read here; give that group another gid (groupmod -g), or set NODEHA_POSTGRES_GID if the image's postgres has another", gid, name))
	}
	return out
}
