package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/store"
)

// EventStore is what the hub reads.
type EventStore interface {
	RevocationsSince(ctx context.Context, seq int64, limit int) ([]store.RevocationEvent, error)
	LastRevocationSeq(ctx context.Context) (int64, error)
}

// eventFromStore is how a stored revocation goes out on the feed.
func eventFromStore(e store.RevocationEvent) revocation.Event {
	return revocation.Event{Seq: e.Seq, Serial: e.Serial, SPIFFEID: e.SPIFFEID, NodeID: e.NodeID, Reason: e.Reason, RevokedAt: e.RevokedAt, NotAfter: e.NotAfter}
}

// Default bounds on the feed streams a CA holds open.
const (
	// DefaultMaxStreams is the default bound on all feed streams at once.
	DefaultMaxStreams = 4096
	// DefaultMaxStreamsPerPeer is the default bound on the streams of one
	// peer identity (one SPIFFE ID, however many certificates it holds).
	DefaultMaxStreamsPerPeer = 64
)

// Hub follows the store's revocation log (written by any replica) and
// pushes each new event to every subscriber. Local revocations call Poke so
// that they go out at once; others are seen at the next poll.
type Hub struct {
	Store EventStore
	// Poll is how often the store is read; default 200ms.
	Poll time.Duration
	// OnEvent, if set, hears of every new event (the OCSP cache uses it).
	OnEvent func(revocation.Event)
	Log     *slog.Logger
	// MaxStreams bounds the streams open at once, whoever holds them
	// (Admit); zero means DefaultMaxStreams.
	MaxStreams int
	// MaxStreamsPerPeer bounds the streams one peer identity holds open at
	// once (Admit); zero means DefaultMaxStreamsPerPeer.
	MaxStreamsPerPeer int

	mu      sync.Mutex
	last    int64
	subs    map[chan *revocation.Event]struct{}
	closed  bool
	poke    chan struct{}
	once    sync.Once
	streams int
	perPeer map[string]int
}

// StreamLimitError is Admit's refusal: a bound on feed streams is reached.
type StreamLimitError struct {
	// Peer is the identity refused.
	Peer string
	// PerPeer is true when Peer holds its own limit of streams, false when
	// the CA holds its limit of all streams.
	PerPeer bool
	// Limit is the bound reached.
	Limit int
}

func (e *StreamLimitError) Error() string {
	if e.PerPeer {
		return fmt.Sprintf("%s already holds %d revocation feed streams, the most one identity may hold open on this CA: close the streams it does not need (one per process is enough) or raise the CA's --feed-max-streams-per-identity", e.Peer, e.Limit)
	}
	return fmt.Sprintf("this CA already serves %d revocation feed streams, its limit: retry later, or raise the CA's --feed-max-streams", e.Limit)
}

// Admit counts one more feed stream for peer (an authenticated identity)
// and returns the function that releases it, or a *StreamLimitError when
// peer already holds MaxStreamsPerPeer streams or the hub MaxStreams.
func (h *Hub) Admit(peer string) (release func(), err error) {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.perPeer[peer] >= h.MaxStreamsPerPeer {
		return nil, &StreamLimitError{Peer: peer, PerPeer: true, Limit: h.MaxStreamsPerPeer}
	}
	if h.streams >= h.MaxStreams {
		return nil, &StreamLimitError{Peer: peer, Limit: h.MaxStreams}
	}
	h.streams++
	h.perPeer[peer]++
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.streams--
			if h.perPeer[peer]--; h.perPeer[peer] <= 0 {
				delete(h.perPeer, peer)
			}
			h.mu.Unlock()
		})
	}, nil
}

// Streams returns the number of streams admitted and not yet released.
func (h *Hub) Streams() int {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams
}

func (h *Hub) init() {
	h.once.Do(func() {
		h.subs = map[chan *revocation.Event]struct{}{}
		h.perPeer = map[string]int{}
		if h.MaxStreams <= 0 {
			h.MaxStreams = DefaultMaxStreams
		}
		if h.MaxStreamsPerPeer <= 0 {
			h.MaxStreamsPerPeer = DefaultMaxStreamsPerPeer
		}
		h.poke = make(chan struct{}, 1)
		if h.Poll <= 0 {
			h.Poll = 200 * time.Millisecond
		}
		if h.Log == nil {
			h.Log = slog.New(slog.DiscardHandler)
		}
	})
}

// Poke asks for an immediate read of the store.
func (h *Hub) Poke() {
	h.init()
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// Run follows the store until ctx is done, then ends every subscription.
func (h *Hub) Run(ctx context.Context) error {
	h.init()
	defer h.closeAll()
	last, ok := h.start(ctx)
	if !ok {
		return nil
	}
	t := time.NewTicker(h.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-h.poke:
		}
		evs, err := h.Store.RevocationsSince(ctx, last, storePage)
		if err != nil {
			continue
		}
		for _, se := range evs {
			e := eventFromStore(se)
			last = e.Seq
			h.publish(&e)
		}
	}
}

// start learns where the store's revocation log ends, retrying every
// second while the store is unavailable; ok is false when ctx ended first.
func (h *Hub) start(ctx context.Context) (last int64, ok bool) {
	for {
		seq, err := h.Store.LastRevocationSeq(ctx)
		if err == nil {
			h.mu.Lock()
			h.last = seq
			h.mu.Unlock()
			return seq, true
		}
		h.Log.Warn("revocation feed: store unavailable", "error", err.Error())
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(time.Second):
		}
	}
}

// publish tells OnEvent and every subscriber of e. One copy is shared by
// every subscriber (read only): a buffered subscription costs a pointer
// per event, not an Event.
func (h *Hub) publish(e *revocation.Event) {
	if h.OnEvent != nil {
		h.OnEvent(*e)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = e.Seq
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
			// A subscriber that cannot keep up is cut; it resumes from its
			// last seq.
			close(ch)
			delete(h.subs, ch)
		}
	}
}

// closeAll ends every subscription, so that streaming responses return and
// the server can shut down; subscribers reconnect and resume.
func (h *Hub) closeAll() {
	h.mu.Lock()
	for ch := range h.subs {
		close(ch)
		delete(h.subs, ch)
	}
	h.closed = true
	h.mu.Unlock()
}

func (h *Hub) subscribe() (chan *revocation.Event, int64) {
	h.init()
	ch := make(chan *revocation.Event, 256)
	h.mu.Lock()
	if h.closed {
		close(ch)
	} else {
		h.subs[ch] = struct{}{}
	}
	last := h.last
	h.mu.Unlock()
	return ch, last
}

func (h *Hub) unsubscribe(ch chan *revocation.Event) {
	h.mu.Lock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
	h.mu.Unlock()
}

// storePage is how many events one read of the store returns at most.
const storePage = 1000

// ServeFeed streams revocations after ?since=SEQ as JSON lines, then every
// new one as it is committed, with a heartbeat every
// revocation.HeartbeatInterval. The caller must be authenticated by the
// HTTP layer, and counted with Admit.
func (h *Hub) ServeFeed(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	ch, live := h.subscribe()
	defer h.unsubscribe(ch)
	// Replay from the store up to its newest event; what the hub delivers
	// after that arrives on ch (duplicates are skipped by seq).
	if n, err := h.Store.LastRevocationSeq(ctx); err == nil && n > live {
		live = n
	}
	s := startStream(w, since, live)
	if err := h.replay(ctx, s, live); err != nil {
		return
	}
	s.sent = max(s.sent, live)
	if err := s.heartbeat(); err != nil {
		return
	}
	s.flush()
	s.follow(ctx, ch)
}

// replay writes the stored events after s.sent up to live, the newest the
// hub had seen when the stream subscribed.
func (h *Hub) replay(ctx context.Context, s *stream, live int64) error {
	for s.sent < live {
		evs, err := h.Store.RevocationsSince(ctx, s.sent, storePage)
		if err != nil {
			h.Log.Warn("revocation feed: cannot read the history from the store; the subscriber will reconnect", "error", err.Error())
			return err
		}
		for _, se := range evs {
			if se.Seq > live {
				return nil
			}
			e := eventFromStore(se)
			if err := s.send(&e); err != nil {
				return err
			}
		}
		if len(evs) < storePage {
			return nil
		}
	}
	return nil
}

// stream is one open feed response: a JSON line per event, each written
// under a fresh write deadline.
type stream struct {
	rc  *http.ResponseController
	enc *json.Encoder
	// sent is the seq of the last event written (or the subscriber's
	// since).
	sent int64
}

// startStream opens the feed response: headers, and deadlines fit for a
// long-lived stream (the server's own timeouts would cut it).
func startStream(w http.ResponseWriter, since, live int64) *stream {
	s := &stream{rc: http.NewResponseController(w), enc: json.NewEncoder(w), sent: since}
	s.rc.SetReadDeadline(time.Time{})
	s.extend()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(revocation.SeqHeader, strconv.FormatInt(live, 10))
	return s
}

// extend pushes the write deadline forward for one more line.
func (s *stream) extend() { s.rc.SetWriteDeadline(time.Now().Add(30 * time.Second)) }

// send writes e unless the subscriber already has it.
func (s *stream) send(e *revocation.Event) error {
	if e.Seq <= s.sent {
		return nil
	}
	s.extend()
	if err := s.enc.Encode(e); err != nil {
		return err
	}
	s.sent = e.Seq
	return nil
}

// heartbeat writes a line that carries only the seq reached.
func (s *stream) heartbeat() error {
	s.extend()
	return s.enc.Encode(revocation.Event{Seq: s.sent, Heartbeat: true})
}

// flush sends what was written so far (where the writer can).
func (s *stream) flush() { s.rc.Flush() }

// follow writes each event the hub delivers on ch, and a heartbeat every
// revocation.HeartbeatInterval, until the subscriber leaves, a write fails
// or the hub closes ch.
func (s *stream) follow(ctx context.Context, ch <-chan *revocation.Event) {
	hb := time.NewTicker(revocation.HeartbeatInterval)
	defer hb.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			err = s.send(e)
		case <-hb.C:
			err = s.heartbeat()
		}
		if err != nil {
			return
		}
		s.flush()
	}
}
