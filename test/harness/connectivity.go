package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Ping sends one ICMP echo (ping -c1 -W1) from inside from to addr (IPv4 or IPv6).
func Ping(t testing.TB, from *NetNS, addr string) error {
	t.Helper()
	if _, err := from.run("ping", "-c", "1", "-W", "1", addr); err != nil {
		return fmt.Errorf("ping %s from %s: %w", addr, from.Name(), err)
	}
	return nil
}

// whoamiListen maps a network to the socat listening address; each connection forks a child
// that answers with the peer address socat saw. UDP is served in process instead: socat's
// forked UDP children keep the shared socket open for a while and swallow other clients'
// datagrams.
var whoamiListen = map[string]string{
	"tcp4": "TCP4-LISTEN:%d,fork,reuseaddr",
	"tcp6": "TCP6-LISTEN:%d,fork,reuseaddr,ipv6only=1",
}

// Whoami is a server that replies to every TCP connection or UDP datagram with the source
// address it sees, so tests can tell whether traffic was masqueraded or DNATed.
type Whoami struct {
	NS      *NetNS
	Network string
	Port    int
	done    chan error
	stop    func() error
}

// StartWhoami starts a whoami server on all addresses of in, for network tcp4, tcp6, udp4 or
// udp6, and stops it when the test ends.
func StartWhoami(t testing.TB, in *NetNS, network string, port int) *Whoami {
	t.Helper()
	if network == "udp4" || network == "udp6" {
		return startUDPWhoami(t, in, network, port)
	}
	listen, ok := whoamiListen[network]
	if !ok {
		t.Fatalf("whoami: unsupported network %q", network)
	}
	cmd := in.Command("socat", fmt.Sprintf(listen, port), "SYSTEM:echo $SOCAT_PEERADDR")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting whoami server in %s: %v", in.Name(), err)
	}
	w := &Whoami{NS: in, Network: network, Port: port, done: make(chan error, 1)}
	go func() { w.done <- cmd.Wait() }()
	w.stop = sync.OnceValue(func() error {
		// `ip netns exec` execs socat, so this PID is the server itself.
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("killing whoami server pid %d: %w", cmd.Process.Pid, err)
		}
		<-w.done
		return nil
	})
	t.Cleanup(func() {
		if err := w.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := w.waitListening(); err != nil {
		t.Fatalf("whoami server %s/%d in %s: %v (socat: %s)", network, port, in.Name(), err, stderr.String())
	}
	return w
}

// startUDPWhoami binds the socket inside in (a socket stays in the netns it was created in)
// and answers every datagram from a goroutine.
func startUDPWhoami(t testing.TB, in *NetNS, network string, port int) *Whoami {
	var pc net.PacketConn
	err := in.Do(func() (err error) {
		pc, err = net.ListenPacket(network, ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("whoami server %s/%d in %s: %v", network, port, in.Name(), err)
	}
	w := &Whoami{NS: in, Network: network, Port: port, done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				w.done <- nil
				return
			}
			if ua, ok := from.(*net.UDPAddr); ok {
				_, _ = pc.WriteTo([]byte(ua.IP.String()+"\n"), from)
			}
		}
	}()
	w.stop = sync.OnceValue(func() error {
		err := pc.Close()
		<-w.done
		return err
	})
	t.Cleanup(func() {
		if err := w.Stop(); err != nil {
			t.Error(err)
		}
	})
	return w
}

// Stop kills the server; it is safe to call more than once.
func (w *Whoami) Stop() error { return w.stop() }

func (w *Whoami) waitListening() error {
	flag := "-tln"
	if strings.HasPrefix(w.Network, "udp") {
		flag = "-uln"
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-w.done:
			w.done <- err
			return fmt.Errorf("server exited: %v", err)
		default:
		}
		out, err := w.NS.run("ss", "-H", flag, "sport = :"+strconv.Itoa(w.Port))
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("not listening after 5s")
}

// AskWhoami connects (or sends a datagram) from inside from to addr ("host:port") over network
// (tcp4, tcp6, udp4, udp6) and returns the source address the whoami server reported, in
// canonical form.
func AskWhoami(from *NetNS, network, addr string) (string, error) {
	var conn net.Conn
	// A socket belongs to the netns it was created in; using it afterwards needs no switch.
	err := from.Do(func() (err error) {
		conn, err = net.DialTimeout(network, addr, 2*time.Second)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("connecting %s %s from %s: %w", network, addr, from.Name(), err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return "", fmt.Errorf("setting deadline: %w", err)
	}
	var reply []byte
	if strings.HasPrefix(network, "udp") {
		if _, err := conn.Write([]byte("whoami\n")); err != nil {
			return "", fmt.Errorf("sending to %s from %s: %w", addr, from.Name(), err)
		}
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			return "", fmt.Errorf("reading reply from %s in %s: %w", addr, from.Name(), err)
		}
		reply = buf[:n]
	} else {
		reply, err = io.ReadAll(conn)
		if err != nil {
			return "", fmt.Errorf("reading reply from %s in %s: %w", addr, from.Name(), err)
		}
	}
	peer := strings.Trim(strings.TrimSpace(string(reply)), "[]")
	ip := net.ParseIP(peer)
	if ip == nil {
		return "", fmt.Errorf("reply from %s %s is not an address: %q", network, addr, reply)
	}
	// socat spells IPv6 addresses out in full; the canonical form compares with config values.
	return ip.String(), nil
}
