package supervisor

import (
	"time"

	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/spilo"
)

// VerdictCodes is the verdict's reason codes (for metrics).
func VerdictCodes(now time.Time, synchronous bool, es embedetcd.Status, c spilo.ContainerStatus, p *health.Patroni) []string {
	var codes []string
	for _, r := range verdict(now, synchronous, es, c, p) {
		codes = append(codes, r.code)
	}
	return codes
}
