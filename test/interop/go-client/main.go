// Command go-client is an independent ttRPC client of the agent, for the interoperability test
// test/integration/go-interop.test.ts: containerd's Go ttrpc (github.com/containerd/ttrpc) with
// message types and client stubs generated at test time by protoc + protoc-gen-gogottrpc from
// the agent's .proto files, the way the Kata runtime's Go code talks to the agent.
//
// Usage: go-client SOCKET ROOTFS
//
//	SOCKET  the agent's ttRPC unix socket (a path, or unix:///path)
//	ROOTFS  a busybox root filesystem (scripts/make-rootfs)
//
// It checks grpc.Health/Check (SERVING) and Version, then drives grpc.AgentService through a
// container's life: CreateSandbox, CreateContainer, StartContainer, ReadStdout until the stream
// ends, WaitProcess (exit status 5), RemoveContainer, DestroySandbox. It prints one line per
// step ("<step>: ...") and "go-client: PASS" at the end, and exits 1 on the first mismatch.
//
// The generated packages are imported by their go_package paths (those of the upstream protos);
// the test builds this file in GOPATH mode against Debian's golang-* packages.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	pb "github.com/kata-containers/kata-containers/src/runtime/virtcontainers/pkg/agent/protocols/grpc"
	"google.golang.org/grpc/status"
)

const callTimeout = 30 * time.Second

func fail(format string, args ...interface{}) {
	fmt.Printf("go-client: FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func step(name, format string, args ...interface{}) {
	fmt.Printf("%s: "+format+"\n", append([]interface{}{name}, args...)...)
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

func must(name string, err error) {
	if err != nil {
		fail("%s: %v", name, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		fail("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// readAll calls ReadStdout/ReadStderr until the agent ends the stream with an error status
// (upstream: "read meet eof"; kata-agent-ts: OUT_OF_RANGE "EOF"). Returns the data and the
// status that ended it.
func readAll(read func(context.Context, *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error), cid string) (string, *status.Status) {
	var out strings.Builder
	for {
		c, cancel := ctx()
		resp, err := read(c, &pb.ReadStreamRequest{ContainerId: cid, ExecId: cid, Len: 64 * 1024})
		cancel()
		if err != nil {
			return out.String(), status.Convert(err)
		}
		out.Write(resp.Data)
	}
}

func spec(rootfs string) *pb.Spec {
	return &pb.Spec{
		Version: "1.1.0",
		Process: &pb.Process{
			User: &pb.User{UID: 0, GID: 0},
			Args: []string{"sh", "-c", "echo hello-from-go; exit 5"},
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
			Cwd:  "/",
		},
		Root: &pb.Root{Path: rootfs},
		Mounts: []*pb.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &pb.Linux{
			Namespaces: []*pb.LinuxNamespace{{Type: "mount"}, {Type: "uts"}, {Type: "ipc"}},
		},
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-client SOCKET ROOTFS")
		os.Exit(2)
	}
	socket := strings.TrimPrefix(os.Args[1], "unix://")
	rootfs := os.Args[2]

	conn, err := net.DialTimeout("unix", socket, 10*time.Second)
	must("dial", err)
	client := ttrpc.NewClient(conn)
	defer client.Close()
	step("connect", "%s", socket)

	health := pb.NewHealthClient(client)
	agent := pb.NewAgentServiceClient(client)

	c, cancel := ctx()
	hc, err := health.Check(c, &pb.CheckRequest{})
	cancel()
	must("Check", err)
	step("health", "%s", hc.Status)
	if hc.Status != pb.HealthCheckResponse_SERVING {
		fail("Health.Check: want SERVING, got %s", hc.Status)
	}

	c, cancel = ctx()
	ver, err := health.Version(c, &pb.CheckRequest{})
	cancel()
	must("Version", err)
	step("version", "agent %q api %q", ver.AgentVersion, ver.GrpcVersion)
	if ver.AgentVersion == "" || ver.GrpcVersion == "" {
		fail("Health.Version: empty version")
	}

	sandboxID := randomHex(32)
	c, cancel = ctx()
	_, err = agent.CreateSandbox(c, &pb.CreateSandboxRequest{SandboxId: sandboxID, Hostname: "go-interop"})
	cancel()
	must("CreateSandbox", err)
	step("create-sandbox", "ok %s", sandboxID[:12])

	cid := "go-" + randomHex(4)
	c, cancel = ctx()
	_, err = agent.CreateContainer(c, &pb.CreateContainerRequest{ContainerId: cid, ExecId: cid, OCI: spec(rootfs)})
	cancel()
	must("CreateContainer", err)
	step("create-container", "ok %s", cid)

	c, cancel = ctx()
	_, err = agent.StartContainer(c, &pb.StartContainerRequest{ContainerId: cid})
	cancel()
	must("StartContainer", err)
	step("start-container", "ok")

	// Drain stderr alongside stdout, as a runtime's shim does.
	var wg sync.WaitGroup
	var stderr string
	var stderrEnd *status.Status
	wg.Add(1)
	go func() {
		defer wg.Done()
		stderr, stderrEnd = readAll(agent.ReadStderr, cid)
	}()
	stdout, stdoutEnd := readAll(agent.ReadStdout, cid)
	wg.Wait()
	for _, line := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
		step("stdout", "%s", line)
	}
	step("read-stdout", "ended with %s %q", stdoutEnd.Code(), stdoutEnd.Message())
	step("read-stderr", "%d bytes, ended with %s %q", len(stderr), stderrEnd.Code(), stderrEnd.Message())
	if stdout != "hello-from-go\n" {
		fail("stdout: want %q, got %q", "hello-from-go\n", stdout)
	}
	if stderr != "" {
		fail("stderr: want nothing, got %q", stderr)
	}

	c, cancel = ctx()
	wait, err := agent.WaitProcess(c, &pb.WaitProcessRequest{ContainerId: cid, ExecId: cid})
	cancel()
	must("WaitProcess", err)
	step("wait-process", "status %d", wait.Status)
	if wait.Status != 5 {
		fail("WaitProcess: want status 5, got %d", wait.Status)
	}

	c, cancel = ctx()
	_, err = agent.RemoveContainer(c, &pb.RemoveContainerRequest{ContainerId: cid, Timeout: 10})
	cancel()
	must("RemoveContainer", err)
	step("remove-container", "ok")

	// A call on the removed container must come back as a ttRPC error status, not break the connection.
	c, cancel = ctx()
	_, err = agent.StartContainer(c, &pb.StartContainerRequest{ContainerId: cid})
	cancel()
	if err == nil {
		fail("StartContainer after RemoveContainer: want an error")
	}
	step("start-removed", "error %s", status.Code(err))

	c, cancel = ctx()
	_, err = agent.DestroySandbox(c, &pb.DestroySandboxRequest{})
	cancel()
	must("DestroySandbox", err)
	step("destroy-sandbox", "ok")

	fmt.Println("go-client: PASS")
}
