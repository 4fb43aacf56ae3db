// criexec: a remote command client as kubelet and kubectl run one, for berth's tests.
// It speaks to a CRI streaming URL with client-go's own SPDY executor (the code kubelet
// and kubectl use), copies this process's streams, and exits with the command's status.
//
//	criexec [-stdin] [-tty -cols N -rows M] URL
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

type fixedSize struct {
	size *remotecommand.TerminalSize
}

// Next hands out one size, then blocks no more: the session sends it once.
func (f *fixedSize) Next() *remotecommand.TerminalSize {
	size := f.size
	f.size = nil
	return size
}

func main() {
	stdin := flag.Bool("stdin", false, "send this process's stdin")
	tty := flag.Bool("tty", false, "ask for a terminal")
	cols := flag.Uint("cols", 0, "terminal width to send")
	rows := flag.Uint("rows", 0, "terminal height to send")
	flag.Parse()
	target, err := url.Parse(flag.Arg(0))
	if err != nil || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: criexec [-stdin] [-tty -cols N -rows M] URL")
		os.Exit(2)
	}
	executor, err := remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "criexec:", err)
		os.Exit(2)
	}
	options := remotecommand.StreamOptions{Stdout: os.Stdout, Tty: *tty}
	if *stdin {
		options.Stdin = os.Stdin
	}
	if !*tty {
		options.Stderr = os.Stderr
	}
	if *tty && *cols > 0 {
		size := &remotecommand.TerminalSize{Width: uint16(*cols), Height: uint16(*rows)}
		options.TerminalSizeQueue = &fixedSize{size: size}
	}
	err = executor.StreamWithContext(context.Background(), options)
	var exitErr exec.CodeExitError
	switch {
	case err == nil:
		os.Exit(0)
	case errors.As(err, &exitErr):
		os.Exit(exitErr.Code)
	default:
		fmt.Fprintln(os.Stderr, "criexec:", err)
		os.Exit(125)
	}
}
