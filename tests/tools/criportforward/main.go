// criportforward: port forwarding as kubectl port-forward does it, for berth's tests.
// It listens on 127.0.0.1:LOCAL and forwards each connection to REMOTE in the pod
// through a CRI streaming URL, with client-go's own port forwarder over SPDY. It
// prints "ready" once listening and runs until its stdin closes.
//
//	criportforward URL LOCAL:REMOTE
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: criportforward URL LOCAL:REMOTE")
		os.Exit(2)
	}
	target, err := url.Parse(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "criportforward:", err)
		os.Exit(2)
	}
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "criportforward:", err)
		os.Exit(2)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", target)
	stop := make(chan struct{})
	ready := make(chan struct{})
	forwarder, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"},
		[]string{os.Args[2]}, stop, ready, io.Discard, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "criportforward:", err)
		os.Exit(2)
	}
	go func() {
		<-ready
		fmt.Println("ready")
	}()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	if err := forwarder.ForwardPorts(); err != nil {
		fmt.Fprintln(os.Stderr, "criportforward:", err)
		os.Exit(1)
	}
}
