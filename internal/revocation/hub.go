package revocation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mutual-tls/mutual/internal/store"
)

// EventStore is what the hub reads.
type EventStore interface {
	RevocationsSince(ctx context.Context, seq int64, limit int) ([]store.RevocationEvent, error)
	LastRevocationSeq(ctx context.Context) (int64, error)
}

// Event is one revocation on the push feed (one JSON line).
type Event struct {
	Seq       int64     `json:"seq"`
	Serial    string    `json:"serial,omitempty"`
	SPIFFEID  string    `json:"spiffe_id,omitempty"`
	NodeID    string    `json:"node_id,omitempty"`
	Reason    int       `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// NotAfter is when the revoked certificate expires anyway.
	NotAfter time.Time `json:"not_after,omitzero"`
	// Heartbeat lines carry only the latest seq; they let clients notice a
	// dead connection.
	Heartbeat bool `json:"heartbeat,omitempty"`
}

func fromStore(e store.RevocationEvent) Event {
	return Event{Seq: e.Seq, Serial: e.Serial, SPIFFEID: e.SPIFFEID, NodeID: e.NodeID, Reason: e.Reason, RevokedAt: e.RevokedAt, NotAfter: e.NotAfter}
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
	OnEvent func(Event)
	Log     *slog.Logger
	// MaxStreams bounds the streams open at once, whoever holds them
	// (Admit); zero means DefaultMaxStreams.
	MaxStreams int
	// MaxStreamsPerPeer bounds the streams one peer identity holds open at
	// once (Admit); zero means DefaultMaxStreamsPerPeer.
	MaxStreamsPerPeer int

	mu      sync.Mutex
	last    int64
	subs    map[chan *Event]struct{}
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
		h.subs = map[chan *Event]struct{}{}
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

// Run follows the store until ctx is done.
func (h *Hub) Run(ctx context.Context) error {
	h.init()
	last, err := h.Store.LastRevocationSeq(ctx)
	for err != nil {
		h.Log.Warn("revocation feed: store unavailable", "error", err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		last, err = h.Store.LastRevocationSeq(ctx)
	}
	h.mu.Lock()
	h.last = last
	h.mu.Unlock()
	t := time.NewTicker(h.Poll)
	defer t.Stop()
	defer h.closeAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-h.poke:
		}
		evs, err := h.Store.RevocationsSince(ctx, last, 1000)
		if err != nil {
			continue
		}
		for _, se := range evs {
			e := fromStore(se)
			last = e.Seq
			if h.OnEvent != nil {
				h.OnEvent(e)
			}
			h.mu.Lock()
			h.last = last
			// One copy shared by every subscriber (read only): a buffered
			// subscription costs a pointer per event, not an Event.
			for ch := range h.subs {
				select {
				case ch <- &e:
				default:
					// A subscriber that cannot keep up is cut; it resumes
					// from its last seq.
					close(ch)
					delete(h.subs, ch)
				}
			}
			h.mu.Unlock()
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

func (h *Hub) subscribe() (chan *Event, int64) {
	h.init()
	ch := make(chan *Event, 256)
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

func (h *Hub) unsubscribe(ch chan *Event) {
	h.mu.Lock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
	h.mu.Unlock()
}

// ServeFeed streams revocations after ?since=SEQ as JSON lines, then every
// new one as it is committed, with a heartbeat every 15 seconds. The caller
// must be authenticated by the HTTP layer, and counted with Admit.
func (h *Hub) ServeFeed(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	ch, live := h.subscribe()
	defer h.unsubscribe(ch)
	// Replay from the store up to its newest event; what the hub delivers
	// after that arrives on ch (duplicates are skipped by seq).
	if n, err := h.Store.LastRevocationSeq(r.Context()); err == nil && n > live {
		live = n
	}
	// A long-lived stream: no read deadline, and a write deadline pushed
	// forward before each line (the server's own timeouts would cut it).
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	extend := func() { rc.SetWriteDeadline(time.Now().Add(30 * time.Second)) }
	extend()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Mutual-Revocation-Seq", strconv.FormatInt(live, 10))
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	ctx := r.Context()
	sent := since
	// History up to what the hub had seen when we subscribed.
	for sent < live {
		evs, err := h.Store.RevocationsSince(ctx, sent, 1000)
		if err != nil {
			return
		}
		if len(evs) == 0 {
			break
		}
		for _, se := range evs {
			if se.Seq > live {
				break
			}
			extend()
			if err := enc.Encode(fromStore(se)); err != nil {
				return
			}
			sent = se.Seq
		}
		if evs[len(evs)-1].Seq > live || len(evs) < 1000 {
			break
		}
	}
	if sent < live {
		sent = live
	}
	enc.Encode(Event{Seq: sent, Heartbeat: true})
	if flusher != nil {
		flusher.Flush()
	}
	hb := time.NewTicker(15 * time.Second)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			if e.Seq <= sent {
				continue
			}
			extend()
			if err := enc.Encode(e); err != nil {
				return
			}
			sent = e.Seq
		case <-hb.C:
			extend()
			if err := enc.Encode(Event{Seq: sent, Heartbeat: true}); err != nil {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}
