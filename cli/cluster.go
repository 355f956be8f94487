package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nodeha/nodeha/health"
)

// statusCluster prints the cluster view of the nodeha behind socket; exit
// 1 when the cluster is not whole.
func statusCluster(socket string, asJSON bool, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := health.GetCluster(ctx, socket)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	} else {
		printCluster(stdout, v)
	}
	if !v.Whole {
		return &exitError{1, nil}
	}
	return nil
}

func printCluster(w io.Writer, v health.ClusterView) {
	state := "whole"
	if !v.Whole {
		state = "NOT WHOLE"
	}
	fmt.Fprintf(w, "cluster %s: %s (as %s sees it)\n", v.Scope, state, v.From)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tROLE\tSTATE\tTL\tLAG\tETCD\tCONTAINER\tRESTARTS\tNODEHA\tHEALTHY")
	for _, h := range v.Hosts {
		lag := "?"
		if h.LagBytes >= 0 {
			lag = fmt.Sprintf("%d", h.LagBytes)
		}
		container, restarts, version := "?", "?", "?"
		if s := h.Status; s != nil {
			container, version = s.Container.State, s.Version
			restarts = fmt.Sprintf("%d", s.Container.Restarts)
			if s.Container.Fenced != "" {
				container = "fenced"
			}
		}
		healthy := "yes"
		if !h.Healthy {
			healthy = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Address, dash(h.Role), dash(h.State), h.Timeline, lag, dash(h.Etcd), container, restarts, version, healthy)
	}
	tw.Flush()
	if f := v.LastFailover; f != nil {
		fmt.Fprintf(w, "last failover: %s, %s -> %s: %s\n", f.At.Format(time.RFC3339), f.From, f.To, f.Why)
	} else {
		fmt.Fprintln(w, "last failover: none recorded")
	}
	if len(v.Problems) > 0 {
		fmt.Fprintf(w, "not whole:\n  %s\n", strings.Join(v.Problems, "\n  "))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
