// Command fpgaflow-front is the gRPC front end of fpgaflow's inference server (`fpgaflow serve --front
// native`): it holds the server's public port and does gRPC's work (HTTP/2, TLS, flow control, framing)
// in Go, and hands each prediction call to the Python server as one frame on a Unix socket: the method's
// number and the request's protobuf bytes in, the status and the response's bytes out. The Python side
// parses, validates, batches, computes, measures and maps errors exactly as its own gRPC server does; the
// methods not named by --unary (health, reflection, the model and server metadata calls) are relayed
// unchanged to that gRPC server, on a Unix socket of its own.
//
// Frames on the calls socket, little-endian, each after a uint32 length:
//
//	request:  uint32 call id | uint16 method index (in --unary's order) | request bytes
//	response: uint32 call id | uint8 status code | uint32 message length | message | response bytes
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// window is each stream's and each connection's flow-control window: 8 MiB is a 1.3 Gbit/s stream at 50 ms.
const window = 8 << 20

// rawCodec passes messages through as bytes: the Python side owns the protobuf types.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = data // grpc hands over a slice of its own for each message
	return nil
}
func (rawCodec) Name() string { return "proto" }

type reply struct {
	code    codes.Code
	message string
	body    []byte
}

// calls multiplexes the prediction calls over one Unix socket to the Python server.
type calls struct {
	conn    net.Conn
	mu      sync.Mutex
	next    uint32
	pending map[uint32]chan reply
	broken  error

	out     sync.Mutex // guards queued, spare and writing
	queued  []byte     // frames waiting for the writer
	spare   []byte
	writing bool
}

func dialCalls(path string) (*calls, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	c := &calls{conn: conn, pending: map[uint32]chan reply{}}
	go c.read()
	return c, nil
}

// send queues a frame; the first caller to find no write under way writes, in one system call, every frame
// queued until then (and those queued while it wrote): calls that arrive together reach the Python side in
// one read, and no goroutine stands between a call and its write.
func (c *calls) send(head, body []byte) {
	c.out.Lock()
	c.queued = append(append(c.queued, head...), body...)
	if c.writing {
		c.out.Unlock()
		return
	}
	c.writing = true
	for len(c.queued) > 0 {
		batch := c.queued
		c.queued = c.spare[:0]
		c.out.Unlock()
		_, err := c.conn.Write(batch)
		c.out.Lock()
		c.spare = batch
		if err != nil {
			c.writing = false
			c.out.Unlock()
			c.fail(err)
			return
		}
	}
	c.writing = false
	c.out.Unlock()
}

func (c *calls) read() {
	r := bufio.NewReaderSize(c.conn, 256<<10)
	var head [4]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			c.fail(err)
			return
		}
		frame := make([]byte, binary.LittleEndian.Uint32(head[:]))
		if _, err := io.ReadFull(r, frame); err != nil {
			c.fail(err)
			return
		}
		if len(frame) < 9 {
			c.fail(fmt.Errorf("a reply frame of %d bytes", len(frame)))
			return
		}
		id, code := binary.LittleEndian.Uint32(frame), codes.Code(frame[4])
		n := int(binary.LittleEndian.Uint32(frame[5:]))
		if 9+n > len(frame) {
			c.fail(fmt.Errorf("a reply frame's message runs past its end"))
			return
		}
		c.mu.Lock()
		done := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if done != nil {
			done <- reply{code, string(frame[9 : 9+n]), frame[9+n:]}
		}
	}
}

// fail answers every waiting call UNAVAILABLE: the Python server is gone, and this process exits.
func (c *calls) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return
	}
	c.broken = err
	for id, done := range c.pending {
		done <- reply{code: codes.Unavailable, message: "the inference server's Python process is gone"}
		delete(c.pending, id)
	}
	log.Printf("the calls socket failed (%v): stopping", err)
	go func() { time.Sleep(100 * time.Millisecond); os.Exit(1) }()
}

func (c *calls) call(ctx context.Context, method uint16, request []byte) (reply, error) {
	done := make(chan reply, 1)
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return reply{}, status.Error(codes.Unavailable, "the inference server's Python process is gone")
	}
	c.next++
	id := c.next
	c.pending[id] = done
	c.mu.Unlock()
	var head [10]byte
	binary.LittleEndian.PutUint32(head[:], uint32(6+len(request)))
	binary.LittleEndian.PutUint32(head[4:], id)
	binary.LittleEndian.PutUint16(head[8:], method)
	c.send(head[:], request)
	select {
	case r := <-done:
		return r, nil
	case <-ctx.Done(): // the Python side still answers; its reply finds no one waiting
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return reply{}, status.FromContextError(ctx.Err()).Err()
	}
}

type front struct {
	unary   map[string]uint16
	calls   *calls
	backend *grpc.ClientConn
}

func (f *front) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	index, ok := f.unary[method]
	if !ok {
		return f.relay(method, stream)
	}
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	r, err := f.calls.call(stream.Context(), index, request)
	if err != nil {
		return err
	}
	if r.code != codes.OK {
		return status.Error(r.code, r.message)
	}
	return stream.SendMsg(&r.body)
}

// relay passes a call of any kind (unary or streaming) to the Python gRPC server and its answers back.
func (f *front) relay(method string, in grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(in.Context())
	defer cancel()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = metadata.NewOutgoingContext(ctx, md.Copy())
	out, err := f.backend.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method,
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var m []byte
			if err := in.RecvMsg(&m); err != nil {
				if err == io.EOF {
					_ = out.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := out.SendMsg(&m); err != nil {
				return
			}
		}
	}()
	sentHeader := false
	for {
		var m []byte
		err := out.RecvMsg(&m)
		if !sentHeader {
			if header, herr := out.Header(); herr == nil {
				_ = in.SendHeader(header)
			}
			sentHeader = true
		}
		if err != nil {
			in.SetTrailer(out.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := in.SendMsg(&m); err != nil {
			return err
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8500", "host:port of the public gRPC port (port 0: any free port)")
	callsPath := flag.String("calls", "", "the Python server's Unix socket for the prediction calls")
	backendPath := flag.String("grpc", "", "the Python gRPC server's Unix socket, for every other method")
	unary := flag.String("unary", "", "the prediction methods, comma-separated full names (/package.Service/Method)")
	tlsCert := flag.String("tls-cert", "", "the server's certificate (PEM), with --tls-key")
	tlsKey := flag.String("tls-key", "", "the certificate's private key (PEM)")
	maxMessage := flag.Int("max-message-bytes", 64<<20, "the largest request or response message")
	maxStreams := flag.Uint("max-concurrent-streams", 0, "calls at once per connection; 0: gRPC's default")
	grace := flag.Duration("grace", 30*time.Second, "on SIGTERM, how long calls in flight may take to finish")
	threads := flag.Int("threads", 1, "OS threads running Go code at once (GOMAXPROCS): the Python side, not the "+
		"transport, limits the calls per second, and idle threads woken for each call cost more CPU than they save")
	flag.Parse()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(*threads)
	}
	log.SetPrefix("fpgaflow-front: ")
	log.SetFlags(0)
	if *callsPath == "" || *backendPath == "" || *unary == "" {
		log.Fatal("--calls, --grpc and --unary are required")
	}
	methods := map[string]uint16{}
	for i, name := range strings.Split(*unary, ",") {
		methods[name] = uint16(i)
	}
	c, err := dialCalls(*callsPath)
	if err != nil {
		log.Fatalf("cannot reach the calls socket: %v", err)
	}
	backend, err := grpc.NewClient("unix:"+*backendPath, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(*maxMessage), grpc.MaxCallSendMsgSize(*maxMessage)))
	if err != nil {
		log.Fatalf("cannot reach the gRPC socket: %v", err)
	}
	f := &front{unary: methods, calls: c, backend: backend}
	options := []grpc.ServerOption{
		grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(f.handle),
		grpc.MaxRecvMsgSize(*maxMessage), grpc.MaxSendMsgSize(*maxMessage),
		// fixed flow-control windows: without them gRPC estimates the link's bandwidth-delay product with a
		// ping after each burst of data, an extra write and read per call at these rates
		grpc.InitialWindowSize(window), grpc.InitialConnWindowSize(window),
	}
	if *maxStreams > 0 {
		options = append(options, grpc.MaxConcurrentStreams(uint32(*maxStreams)))
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		log.Fatal("TLS needs both --tls-cert and --tls-key")
	}
	if *tlsCert != "" {
		creds, err := credentials.NewServerTLSFromFile(*tlsCert, *tlsKey)
		if err != nil {
			log.Fatalf("cannot read the TLS files: %v", err)
		}
		options = append(options, grpc.Creds(creds))
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *listen, err)
	}
	server := grpc.NewServer(options...)
	fmt.Printf("listening on %s\n", lis.Addr()) // the Python server waits for this line
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		done := make(chan struct{})
		go func() { server.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(*grace):
			server.Stop()
		}
	}()
	if err := server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		log.Fatal(err)
	}
}
