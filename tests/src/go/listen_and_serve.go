// A net/http server that binds its own port, as most do: http.Server.ListenAndServe on
// the address in its first argument, and on SIGTERM Shutdown, exiting once it returns. It
// knows nothing of LISTEN_FDS: under `intercept_binds` its bind gets the generation's
// listener. Standard library only.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go-listen-and-serve HOST:PORT")
		os.Exit(2)
	}
	generation := os.Getenv("ZD_GENERATION")
	server := &http.Server{Addr: os.Args[1], Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "generation %s\n", generation)
	})}
	stopped := make(chan struct{})
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM)
		<-signals
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		server.Shutdown(ctx)
		close(stopped)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-stopped
}
