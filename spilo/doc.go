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
//	_ = spilo.PrepareHost(cfg, file)      // host dirs + postgres.yml (0600)
//	r := spilo.NewRunner(docker, spec, log)
//	r.Start(ctx)
//	<-r.Ready()                           // container running (created or adopted)
//	err := r.Close(spilo.StopContainer)   // or spilo.LeaveRunning for upgrades
package spilo
