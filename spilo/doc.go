// Package spilo owns the contract with the Spilo image: rendering Patroni's
// postgres.yml for this host (faithful to the seed recipe, with an optional
// overlay), the container spec (image, environment, mounts, labels and the
// hash that detects drift), and the Runner that keeps that container alive
// through the Docker Engine API.
//
// Usage:
//
//	file, _ := spilo.Render(cfg)          // bytes of postgres.yml
//	spec := spilo.NewSpec(cfg, file)      // container config + spec hash
//	r, _ := spilo.StartRunner(ctx, docker, spec, cfg.SpiloDir(), file, log)
//	<-r.Ready()                           // container running (created or adopted)
//	err := r.Close(spilo.StopContainer)   // or spilo.LeaveRunning for upgrades
package spilo
