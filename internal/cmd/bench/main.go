// Command bench is nodeha's fault benchmark: it brings up the three-host
// demo topology twice — once as hand-run Patroni would be (the seed's
// timings, nodeha's failover help off) and once with nodeha's defaults —
// and runs N trials of every fault against each, under a writer and a
// probe. It prints a table per fault and writes the raw results as JSON.
//
//	go run ./internal/cmd/bench -trials 10 -out bench.json   (make bench)
//
// With -archive the nodeha variants archive their WAL to an S3 server (the
// e2e tests' Versity S3 Gateway) on the cluster's network, and their
// results are named VARIANT+archive, so that -report can put a run with
// archiving and one without side by side.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
)

type variant struct {
	Name string
	Env  []string
	// Endpoint: the writer knows one host (not the primary) and writes
	// through its read-write endpoint, without target_session_attrs;
	// otherwise it has the multi-host string.
	Endpoint bool
	// Archive: every host archives its WAL (NODEHA_BACKUP_*) to benchS3,
	// target s3://bench/<the variant's name without archiveSuffix>.
	Archive bool
}

// archiveSuffix ends the name of a variant run with -archive.
const archiveSuffix = "+archive"

var variants = []variant{
	{Name: "baseline", Env: []string{"NODEHA_TTL=45", "NODEHA_LOOP_WAIT=15", "NODEHA_RETRY_TIMEOUT=15", "NODEHA_FAILOVER_ASSIST=false", "NODEHA_SYNCHRONOUS=false"}},
	{Name: "nodeha-async", Env: []string{"NODEHA_SYNCHRONOUS=false"}},
	{Name: "nodeha"}, // the defaults: synchronous
	{Name: "nodeha-endpoint", Endpoint: true},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	trials := flag.Int("trials", 10, "trials per fault and variant")
	faultNames := flag.String("faults", "all", "comma-separated faults: "+names())
	only := flag.String("variants", "baseline,nodeha-async,nodeha", "variants to run (nodeha-endpoint: nodeha's defaults, the writer through one host's read-write endpoint)")
	out := flag.String("out", "bench-results.json", "raw results (JSON)")
	spilo := flag.String("spilo", "3.0-p1", "Spilo generation: 3.0-p1 or 4.0-p3")
	image := flag.String("image", "", "Spilo image (default: the generation's test image)")
	overlay := flag.String("overlay", "", `Patroni overlay (default: the test image's; "none" for none)`)
	keep := flag.Bool("keep-on-failure", false, "stop at the first failed trial and leave the cluster running for inspection")
	pgbenchRounds := flag.Int("pgbench", 0, "instead of faults: this many pgbench rounds per client count on each variant's primary (commit throughput; -variants defaults to nodeha-async,nodeha)")
	pgbenchClients := flag.String("pgbench-clients", "1,8", "pgbench client counts")
	pgbenchSeconds := flag.Int("pgbench-seconds", 20, "seconds per pgbench round")
	viaEndpoint := flag.Bool("pgbench-endpoint", false, "with -pgbench: compare, on the nodeha variant, pgbench straight to the primary with pgbench through the read-write endpoint (the primary's host's and another host's)")
	idleConns := flag.Int("idle-conns", 0, "instead of faults: nodeha's resident memory on a host idle and with this many client connections open through its read-write endpoint, metrics on and scraped (the nodeha variant)")
	haproxyImage := flag.String("haproxy-image", "nodeha-host-test:bookworm", "with -pgbench-endpoint: the image with Debian's HAProxy for the comparison path (make image builds it)")
	walGrowth := flag.Duration("wal-growth", 0, "instead of faults: run the benchmark's writer this long on the nodeha variant and measure how fast the primary's local WAL archive grows")
	extraEnv := flag.String("env", "", "extra environment of every nodeha (comma-separated K=V, e.g. GOMAXPROCS=1), for experiments")
	report := flag.String("report", "", "print the table of these raw result files (comma-separated; a later file's fault and variant replace an earlier one's) and run nothing")
	archive := flag.Bool("archive", false, "WAL archiving on (faults or -pgbench): every host of the nodeha variants (not baseline) archives to an S3 server on the cluster's network (."+strconv.Itoa(s3Host)+", image "+testcluster.S3Image+": make image-s3), target s3://bench/VARIANT, not encrypted, base backups on their default schedule; results are named VARIANT"+archiveSuffix+", so -report off.json,on.json puts a run without and one with side by side")
	flag.Parse()
	if *extraEnv != "" {
		benchEnv = strings.Split(*extraEnv, ",")
	}
	g, err := testcluster.GenerationOf(*spilo)
	if err != nil {
		return fmt.Errorf("-spilo: %w", err)
	}
	if *image == "" {
		*image = g.TestImage()
	}
	switch *overlay {
	case "":
		*overlay = g.Overlay()
	case "none":
		*overlay = ""
	}
	fs, err := faults.ByName(*faultNames)
	if err != nil {
		return err
	}
	if *report != "" {
		return printReport(strings.Split(*report, ","), fs)
	}
	if *archive && (*walGrowth > 0 || *idleConns > 0 || *viaEndpoint) {
		return fmt.Errorf("-archive: with the faults or -pgbench only")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if err := testcluster.RequireImage(ctx, *image); err != nil {
		return err
	}
	if *archive {
		if err := testcluster.RequireImage(ctx, testcluster.S3Image); err != nil {
			return fmt.Errorf("%w (make image-s3)", err)
		}
	}
	tmp, err := os.MkdirTemp("", "nodeha-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := testcluster.BuildNodehaImage(ctx, ".", tmp, "nodeha-bench:latest"); err != nil {
		return err
	}

	var results []faults.Result
	started := time.Now()
	// The raw results are rewritten after every trial: an interrupted run
	// keeps what it measured.
	save := func(r faults.Result) {
		results = append(results, r)
		b, _ := json.MarshalIndent(map[string]any{
			"machine": machine(), "spilo": g.Tag, "image": *image, "started": started.UTC(), "trials": *trials, "archive": *archive, "results": results,
		}, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
	var tps []Throughput
	var clients []int
	if *pgbenchRounds > 0 {
		for _, f := range strings.Split(*pgbenchClients, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("-pgbench-clients: %q is not a client count", f)
			}
			clients = append(clients, n)
		}
		if !flagGiven("variants") {
			*only = "nodeha-async,nodeha"
			if *viaEndpoint {
				*only = "nodeha"
			}
		}
	}
	var paths []PathThroughput
	savePath := func(t PathThroughput) {
		paths = append(paths, t)
		b, _ := json.MarshalIndent(map[string]any{
			"machine": machine(), "spilo": g.Tag, "image": *image, "started": started.UTC(), "pgbench_endpoint": paths,
		}, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
	saveTPS := func(t Throughput) {
		tps = append(tps, t)
		b, _ := json.MarshalIndent(map[string]any{
			"machine": machine(), "spilo": g.Tag, "image": *image, "started": started.UTC(), "archive": *archive, "pgbench": tps,
		}, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
	if *walGrowth > 0 {
		// The recipe's archive_command, which nodeha no longer renders,
		// through an overlay: the generation's plus that one key.
		recipeOverlay, err := withRecipeArchive(*overlay, tmp)
		if err != nil {
			return err
		}
		res, err := once(ctx, variant{Name: "nodeha"}, g, *image, recipeOverlay, *keep, *out, started, "wal_growth",
			func(ctx context.Context, c *testcluster.Cluster) (any, error) {
				return runWALGrowth(ctx, c, *walGrowth)
			})
		if err != nil {
			return err
		}
		printWALGrowth(os.Stdout, res.(WALGrowth))
		return nil
	}
	if *idleConns > 0 {
		v := variant{Name: "nodeha", Env: []string{fmt.Sprintf("NODEHA_METRICS_LISTEN=:%d", metricsPort)}}
		res, err := once(ctx, v, g, *image, *overlay, *keep, *out, started, "memory",
			func(ctx context.Context, c *testcluster.Cluster) (any, error) { return runMemory(ctx, c, *idleConns) })
		if err != nil {
			return err
		}
		printMemory(os.Stdout, res.(Memory))
		fmt.Printf("\nraw results: %s; %s; took %v\n", *out, machine(), time.Since(started).Round(time.Second))
		return nil
	}
	for _, v := range variants {
		if !slices.Contains(strings.Split(*only, ","), v.Name) {
			continue
		}
		if *archive && v.Name != "baseline" { // the recipe's Patroni has no archive of nodeha's
			v.Name += archiveSuffix
			v.Archive = true
		}
		work := func(ctx context.Context, c *testcluster.Cluster) error {
			return runFaults(ctx, c, v, fs, *trials, *keep, save)
		}
		if *pgbenchRounds > 0 {
			work = func(ctx context.Context, c *testcluster.Cluster) error {
				return runPgbench(ctx, c, v.Name, clients, *pgbenchRounds, *pgbenchSeconds, saveTPS)
			}
		}
		if *pgbenchRounds > 0 && *viaEndpoint {
			work = func(ctx context.Context, c *testcluster.Cluster) error {
				return runEndpointPgbench(ctx, c, clients, *pgbenchRounds, *pgbenchSeconds, *haproxyImage, savePath)
			}
		}
		dir := filepath.Join(os.TempDir(), "nodeha-bench", strings.ReplaceAll(v.Name, "+", "-")) // no + in PostgreSQL's paths
		if err := runVariant(ctx, v, g, *image, *overlay, dir, *keep, work); err != nil {
			return err
		}
	}
	if *pgbenchRounds > 0 && *viaEndpoint {
		printPathThroughput(os.Stdout, paths)
		fmt.Printf("\nraw results: %s; %s; took %v\n", *out, machine(), time.Since(started).Round(time.Second))
		return nil
	}
	if *pgbenchRounds > 0 {
		printThroughput(os.Stdout, tps)
		fmt.Printf("\nraw results: %s; %s; took %v\n", *out, machine(), time.Since(started).Round(time.Second))
		return nil
	}
	printTable(os.Stdout, results, fs)
	fmt.Printf("\nraw results: %s; %s; took %v\n", *out, machine(), time.Since(started).Round(time.Second))
	return nil
}

func names() string {
	var n []string
	for _, f := range faults.All {
		n = append(n, f.Name)
	}
	return strings.Join(n, ",")
}

func flagGiven(name string) bool {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// once runs work on one cluster of v and writes its result, under key,
// to the raw results file out.
func once(ctx context.Context, v variant, g testcluster.Generation, image, overlay string, keep bool, out string, started time.Time, key string,
	work func(context.Context, *testcluster.Cluster) (any, error)) (any, error) {
	var res any
	err := runVariant(ctx, v, g, image, overlay, filepath.Join(os.TempDir(), "nodeha-bench", v.Name), keep,
		func(ctx context.Context, c *testcluster.Cluster) (err error) {
			res, err = work(ctx, c)
			return err
		})
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(map[string]any{"machine": machine(), "spilo": g.Tag, "image": image, "started": started.UTC(), key: res}, "", "  ")
	return res, os.WriteFile(out, b, 0o644)
}

// benchEnv is -env.
var benchEnv []string

// benchPassword is the bench role's (the writer's) password.
const benchPassword = "bench-pw"

// runVariant brings up the variant's cluster, runs work on it and takes it
// down (unless keep and work failed).
func runVariant(ctx context.Context, v variant, g testcluster.Generation, image, overlay, dir string, keep bool, work func(context.Context, *testcluster.Cluster) error) (err error) {
	c, err := testcluster.New(testcluster.Options{
		Prefix: "nodeha-bench", Subnet: "172.28.8.0/24", Hosts: 3, BaseDir: dir,
		NodehaImage: "nodeha-bench:latest", SpiloImage: image, Overlay: overlay,
		Scope: "bench", Env: append(append([]string{"NODEHA_PG_VERSION=" + g.PGVersion}, v.Env...), benchEnv...),
	})
	if err != nil {
		return err
	}
	testcluster.Docker(ctx, "rm", "-f", c.Opts.Prefix+"-s3") // an interrupted -archive run's
	c.Down(ctx, true)
	defer func() {
		if keep && err != nil {
			fmt.Fprintf(os.Stderr, "leaving cluster %s up for inspection (data in %s)\n", c.Opts.Prefix, dir)
			return
		}
		c.Down(context.Background(), true)
	}()
	if v.Archive {
		stop, serr := startArchive(ctx, c)
		if serr != nil {
			return serr
		}
		// Before c.Down (deferred earlier, run later): the network goes
		// only once nothing is on it.
		defer func() { stop(keep && err != nil) }()
	}
	if err := upCluster(ctx, c, v); err != nil {
		return err
	}
	return work(ctx, c)
}

// benchS3 is the S3 server of the variant running with Archive.
var benchS3 *testcluster.S3

// s3Host is the last octet of benchS3's address (hosts have .11 up,
// -pgbench-endpoint's HAProxy .200).
const s3Host = 90

// startArchive creates c's network and starts benchS3 on it, with a bucket
// "bench"; stop removes the server and its files (unless keep).
func startArchive(ctx context.Context, c *testcluster.Cluster) (stop func(keep bool), err error) {
	pfx, err := netip.ParsePrefix(c.Opts.Subnet)
	if err != nil {
		return nil, err
	}
	a := pfx.Masked().Addr().As4()
	a[3] = s3Host
	if _, err := testcluster.Docker(ctx, "network", "inspect", c.Network()); err != nil {
		if _, err := testcluster.Docker(ctx, "network", "create", "--subnet", c.Opts.Subnet,
			"--label", "io.nodeha.testcluster="+c.Opts.Prefix, c.Network()); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "nodeha-bench-s3-")
	if err != nil {
		return nil, err
	}
	s, err := testcluster.StartS3(ctx, c, netip.AddrFrom4(a).String(), dir)
	if err == nil {
		err = s.MakeBucket(ctx, "bench")
		if err != nil {
			s.Remove(context.Background())
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("the archive's S3 server: %w", err)
	}
	benchS3 = s
	return func(keep bool) {
		benchS3 = nil
		if keep {
			fmt.Fprintf(os.Stderr, "leaving S3 server %s (%s) up for inspection (data in %s)\n", s.Name, s.Endpoint, s.DataDir)
			return
		}
		s.Remove(context.Background())
		os.RemoveAll(dir)
	}, nil
}

// withArchive gives every host of c v's archive settings: an empty
// target (what an earlier cluster of v archived there removed: nodeha
// refuses to mix two clusters' WAL), the secrets in the host's directory.
func withArchive(c *testcluster.Cluster, v variant) (string, error) {
	if benchS3 == nil {
		return "", fmt.Errorf("%s: no S3 server", v.Name)
	}
	prefix := strings.TrimSuffix(v.Name, archiveSuffix)
	if err := os.RemoveAll(filepath.Join(benchS3.DataDir, "bench", prefix)); err != nil {
		return "", err
	}
	for _, h := range c.Hosts {
		env, err := benchS3.ArchiveEnv(h, "bench", prefix, "")
		if err != nil {
			return "", err
		}
		h.Extra = env
	}
	return fmt.Sprintf("archive s3://bench/%s at %s", prefix, benchS3.Endpoint), nil
}

func upCluster(ctx context.Context, c *testcluster.Cluster, v variant) error {
	settings := strings.Join(v.Env, " ")
	if v.Archive {
		a, err := withArchive(c, v)
		if err != nil {
			return err
		}
		settings = strings.TrimSpace(settings + " " + a)
	}
	fmt.Fprintf(os.Stderr, "== %s: starting the cluster (%s)\n", v.Name, settings)
	if err := c.Up(ctx); err != nil {
		return err
	}
	leader, err := c.WaitWhole(ctx, 4*time.Minute)
	if err != nil {
		return err
	}
	return faults.Setup(ctx, leader, benchPassword)
}

// runFaults runs trials of every fault on c.
func runFaults(ctx context.Context, c *testcluster.Cluster, v variant, fs []faults.Fault, trials int, keep bool, save func(faults.Result)) error {
	ca, err := c.CAFile()
	if err != nil {
		return err
	}
	client := faults.MultiHost(cli.DSN(strings.Split(c.Peers(), ","), 5432, "bench", "postgres", false, ca))
	if v.Endpoint {
		client = faults.OneEndpoint(c, func(ip string) string {
			return cli.EndpointDSN([]string{ip}, 5433, "bench", "postgres", ca)
		})
	}
	n := 0
	for _, f := range fs {
		for i := 1; i <= trials; i++ {
			n++
			r := faults.Run(ctx, c, f, client, benchPassword, v.Name, n)
			save(r)
			fmt.Fprintf(os.Stderr, "%s %s #%d: pause %dms, whole %dms, acked %d, lost %d, overlaps %d %s\n",
				v.Name, f.Name, i, r.PauseMS, r.WholeMS, r.Acked, r.Lost, len(r.Overlaps), r.Error)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if keep && r.Error != "" {
				return fmt.Errorf("%s %s #%d failed: %s", v.Name, f.Name, i, r.Error)
			}
			if r.Error != "" {
				// A cluster the fault broke (see README: the Patroni 3.0.2
				// split brain) would fail every later trial: start afresh.
				fmt.Fprintf(os.Stderr, "== %s: the trial failed; recreating the cluster from nothing\n", v.Name)
				c.Down(ctx, true)
				if err := upCluster(ctx, c, v); err != nil {
					return err
				}
				// Down removed the CA file the clients' DSN names: the
				// same token makes the same CA, written again.
				if _, err := c.CAFile(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%d CPUs, %s/%s, host %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host)
}

func printTable(w *os.File, results []faults.Result, fs []faults.Fault) {
	archived := slices.ContainsFunc(results, func(r faults.Result) bool { return strings.HasSuffix(r.Variant, archiveSuffix) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "fault\tvariant\ttrials\tpause median\tpause p95\tpause max\twhole median\tlost\toverlaps\tfailed\tpause vs baseline\t"
	if archived {
		head += "pause vs no archive\t"
	}
	fmt.Fprintln(tw, head)
	for _, f := range fs {
		var baseMedian float64
		medians := map[string]float64{}
		for _, name := range variantNames() {
			var pauses, wholes []float64
			lost, overlaps, failed, n := 0, 0, 0, 0
			for _, r := range results {
				if r.Fault != f.Name || r.Variant != name {
					continue
				}
				n++
				if r.Error != "" {
					failed++
				}
				pauses = append(pauses, float64(r.PauseMS)/1000)
				if r.WholeMS > 0 {
					wholes = append(wholes, float64(r.WholeMS)/1000)
				}
				lost += r.Lost
				overlaps += len(r.Overlaps)
			}
			if n == 0 {
				continue
			}
			med := quantile(pauses, 0.5)
			medians[name] = med
			ratio := "-"
			if name == "baseline" {
				baseMedian = med
			} else if baseMedian > 0 && med > 0 {
				ratio = fmt.Sprintf("%.2fx", med/baseMedian)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.2fs\t%.2fs\t%.2fs\t%.1fs\t%d\t%d\t%d\t%s\t",
				f.Name, name, n, med, quantile(pauses, 0.95), quantile(pauses, 1), quantile(wholes, 0.5), lost, overlaps, failed, ratio)
			if archived {
				vs := "-"
				off, ok := medians[strings.TrimSuffix(name, archiveSuffix)]
				if ok && strings.HasSuffix(name, archiveSuffix) && off > 0 && med > 0 {
					vs = fmt.Sprintf("%.2fx (%+.2fs)", med/off, med-off)
				}
				fmt.Fprintf(tw, "%s\t", vs)
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
}

// variantNames are the names results may have: every variant's, each
// followed by its name with archiveSuffix (a run with -archive).
func variantNames() []string {
	var names []string
	for _, v := range variants {
		names = append(names, v.Name, v.Name+archiveSuffix)
	}
	return names
}

// quantile uses the nearest-rank method.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// printReport prints the table of saved runs. A later file's results for a
// fault and variant replace an earlier file's (a re-run of one fault).
func printReport(files []string, fs []faults.Fault) error {
	var merged []faults.Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var run struct {
			Machine string          `json:"machine"`
			Started time.Time       `json:"started"`
			Results []faults.Result `json:"results"`
		}
		if err := json.Unmarshal(b, &run); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		redone := map[[2]string]bool{}
		for _, r := range run.Results {
			redone[[2]string{r.Fault, r.Variant}] = true
		}
		merged = slices.DeleteFunc(merged, func(r faults.Result) bool { return redone[[2]string{r.Fault, r.Variant}] })
		merged = append(merged, run.Results...)
		fmt.Printf("%s: %d trials, started %s, %s\n", f, len(run.Results), run.Started.Format(time.RFC3339), run.Machine)
	}
	fmt.Println()
	printTable(os.Stdout, merged, fs)
	return nil
}
