package apipool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/status"
)

// Budgets: what a key or a client may spend in tokens and cost, counted
// from the units read from the answers (WithUsage, units.go), and the rest
// of a key, or the refusal of a client, once a budget is used up.

// Budget caps what a key (Key.Budget) or a client (NewClientBudgets) may
// spend per period, in the units the pool reads from the answers
// (WithUsage). Each field is one budget; 0 means none, a negative value is
// refused. See the README's "Budgets".
//
// Tokens are an answer's InputTokens plus its OutputTokens: the cached
// tokens count once, as the part of the input they are (usage.Units).
// Cost is the event's Cost from the price table. An amount not known (-1:
// a stream that ended without usage, a body closed before it, a model
// missing from the price table) counts nothing; of the tokens, the input
// or the output that is known counts alone.
//
// Periods: TokensPerMinute counts per clock minute (of the Unix epoch,
// from :00 to :59, not any 60 seconds: up to twice the budget may go in
// 60 seconds across a minute's end); TokensPerDay and CostPerDay per quota
// day, CostPerMonth per calendar month, both in the pool's quota location
// (WithQuotaLocation).
type Budget struct {
	TokensPerMinute int64   `json:"tokens_per_minute,omitempty"`
	TokensPerDay    int64   `json:"tokens_per_day,omitempty"`
	CostPerDay      float64 `json:"cost_per_day,omitempty"`
	CostPerMonth    float64 `json:"cost_per_month,omitempty"`
}

// BudgetKind names one of a Budget's budgets, as the proxy's file, its
// 429 answers and sharedstate.Spend.Budget spell it.
type BudgetKind string

// The budgets of a Budget.
const (
	BudgetTokensPerMinute BudgetKind = "tokens_per_minute"
	BudgetTokensPerDay    BudgetKind = "tokens_per_day"
	BudgetCostPerDay      BudgetKind = "cost_per_day"
	BudgetCostPerMonth    BudgetKind = "cost_per_month"
)

// budgetKinds are a Budget's budgets, in the order of its fields: the
// index of a budget in spendState and the holds.
var budgetKinds = [nBudgets]BudgetKind{BudgetTokensPerMinute, BudgetTokensPerDay, BudgetCostPerDay, BudgetCostPerMonth}

const nBudgets = 4

// maxBudgetTokens bounds a token budget: counts are float64, exact to 2^53.
const maxBudgetTokens = 1 << 53

// IsZero reports whether b sets no budget.
func (b Budget) IsZero() bool { return b == Budget{} }

func (b Budget) limit(i int) float64 {
	switch i {
	case 0:
		return float64(b.TokensPerMinute)
	case 1:
		return float64(b.TokensPerDay)
	case 2:
		return b.CostPerDay
	}
	return b.CostPerMonth
}

func (b Budget) tokens() bool { return b.TokensPerMinute > 0 || b.TokensPerDay > 0 }
func (b Budget) cost() bool   { return b.CostPerDay > 0 || b.CostPerMonth > 0 }

// validate checks b; field names it in errors ("keys[0].Budget").
func (b Budget) validate(field string) error {
	for _, t := range [...]struct {
		name string
		v    int64
	}{{"TokensPerMinute", b.TokensPerMinute}, {"TokensPerDay", b.TokensPerDay}} {
		if t.v < 0 || t.v > maxBudgetTokens {
			return &ConfigError{Field: field + "." + t.name, Reason: fmt.Sprintf("want 0 (none) to %d tokens, got %d", int64(maxBudgetTokens), t.v)}
		}
	}
	for _, c := range [...]struct {
		name string
		v    float64
	}{{"CostPerDay", b.CostPerDay}, {"CostPerMonth", b.CostPerMonth}} {
		if c.v < 0 || math.IsNaN(c.v) || math.IsInf(c.v, 0) {
			return &ConfigError{Field: field + "." + c.name, Reason: fmt.Sprintf("want a finite cost >= 0 (0: none), got %v", c.v)}
		}
	}
	return nil
}

// describe names budget i in words, for errors, logs and alerts.
func describe(i int) string {
	return [...]string{"token budget per minute", "token budget per day", "cost budget per day", "cost budget per month"}[i]
}

// budgetPeriod returns the period of budget i that now falls in, and when
// it ends: the Unix minute, the quota day in loc, or the month in loc
// (year×12 + month−1).
func budgetPeriod(i int, now time.Time, loc *time.Location) (uint64, time.Time) {
	switch i {
	case 0:
		s := now.Unix()
		if s < 0 {
			return 0, time.Unix(60, 0)
		}
		m := uint64(s / 60)
		return m, time.Unix(int64(m+1)*60, 0)
	case 1, 2:
		d := dayIndex(now, loc)
		return d, dayStart(d+1, loc)
	}
	t := now.In(loc)
	y, m := t.Year(), t.Month()
	if y < 0 {
		return 0, time.Date(0, 1, 1, 0, 0, 0, 0, loc)
	}
	return uint64(y)*12 + uint64(m-1), time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
}

// fmtAmount prints an amount of tokens or cost.
func fmtAmount(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// spendState is what one key or one client spent in each of its budgets'
// current periods. The request path reads spent alone (one atomic load);
// the counts change under mu, when an answer's units are known or a
// shared store answers.
type spendState struct {
	scope sharedstate.SpendScope
	id    string

	mu sync.Mutex
	b  Budget
	c  [nBudgets]spendCount
	// spent, when set and not over, is the latest end of the periods
	// whose budget is used up, and which budget that is.
	spent atomic.Pointer[spentMark]
	// stale: the budget changed (ClientBudgets.SetBudgets) and the marks
	// are to be made again from the counts, at the next check.
	stale atomic.Bool
}

type spendCount struct {
	period uint64
	used   float64
	// near and full are the period+1 whose 80% and 100% were alerted
	// (0: none yet).
	near, full uint64
}

type spentMark struct {
	until int64 // pool-clock ns: the period's end
	i     int   // the budget
}

func newSpendState(scope sharedstate.SpendScope, id string, b Budget) *spendState {
	if b.IsZero() {
		return nil
	}
	return &spendState{scope: scope, id: id, b: b}
}

// held reports whether a budget is used up at now, which, and until when.
func (s *spendState) held(now time.Time) (int, time.Time, bool) {
	m := s.spent.Load()
	if m == nil || m.until <= now.UnixNano() {
		return 0, time.Time{}, false
	}
	return m.i, time.Unix(0, m.until).In(now.Location()), true
}

// mark records that budget i is used up until end; s.mu is held. It
// reports whether the mark moved (a budget used up that was not, or one
// that ends later).
func (s *spendState) mark(i int, end, now time.Time) bool {
	u := end.UnixNano()
	if u <= now.UnixNano() {
		return false
	}
	if m := s.spent.Load(); m != nil && m.until > now.UnixNano() && m.until >= u {
		return false
	}
	s.spent.Store(&spentMark{until: u, i: i})
	return true
}

// budgetCrossing is a budget that reached 80% (near) or 100% of its
// limit, to alert.
type budgetCrossing struct {
	i     int
	spent bool
	until time.Time
	used  float64
	limit float64
}

// cross appends to out the thresholds of budget i that the count crossed
// going from before to after in period p, ending at end, unless they were
// alerted in p already; s.mu is held.
func (s *spendState) cross(i int, p uint64, before, after float64, end time.Time, out []budgetCrossing) []budgetCrossing {
	c, l := &s.c[i], s.b.limit(i)
	if before < 0.8*l && after >= 0.8*l && c.near != p+1 {
		c.near = p + 1
		out = append(out, budgetCrossing{i: i, until: end, used: after, limit: l})
	}
	if before < l && after >= l && c.full != p+1 {
		c.full = p + 1
		out = append(out, budgetCrossing{i: i, spent: true, until: end, used: after, limit: l})
	}
	return out
}

// spendAmounts are what one answer spent against each budget: -1 for
// none (not known, or no such budget).
type spendAmounts [nBudgets]float64

// amountsOf reads an event's tokens and cost into the amounts of b's
// budgets; ok is false when it holds none.
func amountsOf(e *recorder.Event, b Budget) (a spendAmounts, ok bool) {
	tokens := float64(-1)
	if b.tokens() && (e.InputTokens >= 0 || e.OutputTokens >= 0) {
		tokens = float64(max(e.InputTokens, 0) + max(e.OutputTokens, 0))
	}
	cost := float64(-1)
	if b.cost() && e.Cost >= 0 && !math.IsInf(e.Cost, 0) {
		cost = e.Cost
	}
	a = spendAmounts{tokens, tokens, cost, cost}
	for i := range a {
		if b.limit(i) == 0 {
			a[i] = -1
		}
		ok = ok || a[i] >= 0
	}
	return a, ok
}

// add counts a at now (budget periods in loc). It returns the thresholds
// crossed, when alert (else the caller alerts from the shared store's
// counts), whether a budget was used up by it (moved is its mark), and the
// spends to share, appended to out.
func (s *spendState) add(a spendAmounts, now time.Time, loc *time.Location, alert bool, out []sharedstate.Spend) (crossed []budgetCrossing, moved *spentMark, spends []sharedstate.Spend) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, amt := range a {
		l := s.b.limit(i)
		if amt < 0 || l == 0 {
			continue
		}
		p, end := budgetPeriod(i, now, loc)
		c := &s.c[i]
		if p != c.period {
			if p < c.period {
				continue // an older period: a clock that went back
			}
			c.period, c.used = p, 0
		}
		before := c.used
		c.used += amt
		if c.used >= l && s.mark(i, end, now) {
			moved = s.spent.Load()
		}
		if alert {
			crossed = s.cross(i, p, before, c.used, end, crossed)
		}
		out = append(out, sharedstate.Spend{Scope: s.scope, ID: s.id, Budget: string(budgetKinds[i]), Period: p, End: end, Amount: amt})
	}
	return crossed, moved, out
}

// noteTotal takes in a shared store's count total of budget i in period p
// (ending at end), after an addition of amount: the count is at least
// that. It returns the thresholds that addition crossed, and the mark when
// it moved.
func (s *spendState) noteTotal(i int, p uint64, end time.Time, total, amount float64, now time.Time) ([]budgetCrossing, *spentMark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, l := &s.c[i], s.b.limit(i)
	if l == 0 {
		return nil, nil
	}
	switch {
	case p == c.period:
		c.used = max(c.used, total)
	case p > c.period:
		c.period, c.used = p, total
	default:
		return nil, nil // an older period
	}
	var moved *spentMark
	if total >= l && s.mark(i, end, now) {
		moved = s.spent.Load()
	}
	return s.cross(i, p, total-amount, total, end, nil), moved
}

// crossedLocally returns the thresholds this replica's own count reached
// in the current periods and has not alerted: for spends the shared store
// could not take.
func (s *spendState) crossedLocally(now time.Time, loc *time.Location) []budgetCrossing {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []budgetCrossing
	for i := range nBudgets {
		if s.b.limit(i) == 0 {
			continue
		}
		p, end := budgetPeriod(i, now, loc)
		if s.c[i].period == p {
			out = s.cross(i, p, 0, s.c[i].used, end, out)
		}
	}
	return out
}

// changed forgets the alerts of the budgets whose limit is not old's: a new
// budget is alerted anew; s.mu is held.
func (s *spendState) changed(old Budget) {
	for i := range nBudgets {
		if s.b.limit(i) != old.limit(i) {
			s.c[i].near, s.c[i].full = 0, 0
		}
	}
}

// remark marks the budgets used up in their current periods, from the
// counts; s.mu is held.
func (s *spendState) remark(now time.Time, loc *time.Location) {
	s.spent.Store(nil)
	for i := range nBudgets {
		l := s.b.limit(i)
		if l == 0 {
			continue
		}
		if p, end := budgetPeriod(i, now, loc); s.c[i].period == p && s.c[i].used >= l {
			s.mark(i, end, now)
		}
	}
}

// adoptSpend makes k count its spend in old's state, the key with the
// same ID that k replaces (SetKeys, ReplaceKey), under k's budget: what a
// key spent belongs to its ID, as it does in a shared store, and the
// answers old still has in flight count with k's. Without a budget, k
// counts nothing.
func (k *keyState) adoptSpend(old *keyState, now time.Time) {
	s := old.spend
	if k.spend == nil || s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ob := s.b
	s.b, k.spend = k.key.Budget, s
	s.changed(ob)
	s.remark(now, k.loc)
}

// uses reads the budgets' use at now, in their current periods.
func (s *spendState) uses(now time.Time, loc *time.Location) []BudgetUse {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []BudgetUse
	for i := range nBudgets {
		l := s.b.limit(i)
		if l == 0 {
			continue
		}
		p, end := budgetPeriod(i, now, loc)
		u := BudgetUse{Kind: budgetKinds[i], Limit: l, Until: end.In(now.Location())}
		if s.c[i].period == p {
			u.Used = s.c[i].used
		}
		out = append(out, u)
	}
	return out
}

// BudgetUse is one budget's use in its current period (KeyStatus.Budgets,
// ClientStatus.Budgets).
type BudgetUse struct {
	Kind BudgetKind
	// Limit is the budget; Used what this pool knows was spent in the
	// period: its own spend, and, with a shared store (sharedstate.Spender),
	// the replicas' total as the store last told it.
	Limit, Used float64
	// Until is when the period ends, and the count starts again.
	Until time.Time
}

// ErrBudgetExceeded is matched (errors.Is) by the error RoundTrip returns
// for a request of a client whose budget is used up: a *BudgetError.
var ErrBudgetExceeded = errors.New("apipool: budget used up")

// BudgetError is returned, before anything is sent, for a request of a
// client (ContextWithClient) past one of its budgets (NewClientBudgets).
// It matches ErrBudgetExceeded.
type BudgetError struct {
	Client string
	// Budget is the budget used up; Limit and Used its limit and what was
	// spent in its period, which ends at Until: the client may send again
	// then.
	Budget      BudgetKind
	Limit, Used float64
	Until       time.Time
}

func (e *BudgetError) Error() string {
	return "apipool: client " + strconv.Quote(e.Client) + " used up its " + string(e.Budget) + " budget (" +
		fmtAmount(e.Used) + " of " + fmtAmount(e.Limit) + ") until " + e.Until.UTC().Format(timeFormat) + "; nothing was sent"
}

// Is makes errors.Is(err, ErrBudgetExceeded) true.
func (e *BudgetError) Is(target error) bool { return target == ErrBudgetExceeded }

// ClientBudgets are the budgets of clients, named as ContextWithClient
// names them, and what each spent. Give it to one pool or to several
// (WithClientBudgets): the pools that share it count a client's spend
// together, and each refuses a client past a budget. Give those pools the
// same clock and quota location. It is safe for concurrent use.
type ClientBudgets struct {
	shared sharedstate.Spender
	states atomic.Pointer[map[string]*spendState]
	mu     sync.Mutex // serialises SetBudgets
}

// NewClientBudgets returns the budgets of the clients in budgets (client
// name → its Budget). A client that is not in the map, and a request
// without a client, has no budget. shared, when not nil (a
// redisstate.Store), shares the clients' spend with the other replicas, as
// a pool's sharedstate.Spender does its keys'. It returns a *ConfigError
// for a bad name or budget.
func NewClientBudgets(budgets map[string]Budget, shared sharedstate.Spender) (*ClientBudgets, error) {
	cb := &ClientBudgets{shared: shared}
	if err := cb.SetBudgets(budgets); err != nil {
		return nil, err
	}
	return cb, nil
}

// SetBudgets replaces the clients' budgets, keeping what each client spent
// in the current periods (a raised budget lets a client that used up the
// old one go on at once). A client left out has no budget any more.
func (cb *ClientBudgets) SetBudgets(budgets map[string]Budget) error {
	for name, b := range budgets {
		field := "ClientBudgets[" + strconv.Quote(name) + "]"
		switch {
		case name == "":
			return &ConfigError{Field: "ClientBudgets", Reason: "an empty client name"}
		case len(name) > 256 || !utf8.ValidString(name):
			return &ConfigError{Field: "ClientBudgets", Reason: "a client name longer than 256 bytes or not valid UTF-8"}
		}
		if err := b.validate(field); err != nil {
			return err
		}
	}
	cb.mu.Lock()
	defer cb.mu.Unlock()
	var old map[string]*spendState
	if p := cb.states.Load(); p != nil {
		old = *p
	}
	m := make(map[string]*spendState, len(budgets))
	for name, b := range budgets {
		if b.IsZero() {
			continue
		}
		if s := old[name]; s != nil {
			s.mu.Lock()
			s.b, b = b, s.b
			s.changed(b)
			s.stale.Store(true) // marked again at its next check, on the pool's clock
			s.mu.Unlock()
			m[name] = s
			continue
		}
		m[name] = newSpendState(sharedstate.SpendClient, strings.Clone(name), b)
	}
	cb.states.Store(&m)
	return nil
}

// state returns the client's spend state, or nil when it has no budget.
func (cb *ClientBudgets) state(name string) *spendState {
	if name == "" {
		return nil
	}
	return (*cb.states.Load())[name]
}

// WithClientBudgets makes the pool count what each client spends against
// its budgets in cb, and refuse at once a request of a client past one of
// them, with a *BudgetError (matching ErrBudgetExceeded) that names the
// budget and when its period ends; nothing is sent and the usage event
// says NoKeyAvailable with the error type "client_budget". The client is
// the name ContextWithClient put on the request's context.
//
// A client is refused once its count reaches the budget, and the count
// grows when an answer's body ends (as Key.Budget's): requests the client
// has in flight when it reaches the budget still finish, so it may
// overshoot by those requests' units (see the README's "Budgets"). A pool
// without WithUsage counts nothing, but still refuses a client that other
// pools sharing cb found past a budget.
func WithClientBudgets(cb *ClientBudgets) Option {
	return optionFunc(func(c *config) error {
		if cb == nil {
			return &ConfigError{Field: "WithClientBudgets", Reason: "nil client budgets"}
		}
		c.clients = cb
		return nil
	})
}

// ClientStatus is one client's budgets at one moment (Transport.ClientBudgets).
type ClientStatus struct {
	Client  string
	Budgets []BudgetUse
}

// ClientBudgets returns the use of every client's budgets now (on the
// pool's clock and in its quota location), by client name; nil without
// WithClientBudgets.
func (t *Transport) ClientBudgets() []ClientStatus {
	cb := t.cfg.clients
	if cb == nil {
		return nil
	}
	now := t.cfg.clock.Now()
	m := *cb.states.Load()
	out := make([]ClientStatus, 0, len(m))
	for name, s := range m {
		out = append(out, ClientStatus{Client: name, Budgets: s.uses(now, t.cfg.quotaLoc)})
	}
	slices.SortFunc(out, func(a, b ClientStatus) int { return strings.Compare(a.Client, b.Client) })
	return out
}

// checkClient returns a *BudgetError when r's client is past a budget.
func (t *Transport) checkClient(r *http.Request) error {
	s := t.cfg.clients.state(ClientFrom(r.Context()))
	if s == nil {
		return nil
	}
	now := t.cfg.clock.Now()
	if s.stale.Load() {
		// SetBudgets changed the budget: the counts tell what is used up.
		s.mu.Lock()
		if s.stale.Swap(false) {
			s.remark(now, t.cfg.quotaLoc)
		}
		s.mu.Unlock()
	}
	i, until, held := s.held(now)
	if !held {
		return nil
	}
	s.mu.Lock()
	e := &BudgetError{Client: s.id, Budget: budgetKinds[i], Limit: s.b.limit(i), Used: s.c[i].used, Until: until}
	s.mu.Unlock()
	return e
}

// refuseClient ends r, refused for err (a *BudgetError): its body closed,
// its usage event recorded.
func (t *Transport) refuseClient(r *http.Request, err error) (*http.Response, error) {
	closeBody(r)
	now := t.cfg.clock.Now()
	e := t.event(r, nil, "", status.NoKeyAvailable, now, 0, 1, nil, "client_budget", trace.SpanContextFromContext(r.Context()))
	t.rec.Record(e)
	return nil, err
}

// countSpend counts what the delivered answer of key k (its event e, its
// units known) spent against k's budgets and its client's.
func (t *Transport) countSpend(k *keyState, e *recorder.Event) {
	var ks *spendState
	if k != nil {
		ks = k.spend
	}
	var cs *spendState
	if t.cfg.clients != nil {
		cs = t.cfg.clients.state(e.Client)
	}
	if ks == nil && cs == nil {
		return
	}
	now := t.cfg.clock.Now()
	t.countOne(ks, t.keySpender, e, now)
	if cs != nil {
		t.countOne(cs, t.cfg.clients.shared, e, now)
	}
}

func (t *Transport) countOne(s *spendState, to sharedstate.Spender, e *recorder.Event, now time.Time) {
	if s == nil {
		return
	}
	s.mu.Lock()
	b := s.b
	s.mu.Unlock()
	a, ok := amountsOf(e, b)
	if !ok {
		return
	}
	var buf [nBudgets]sharedstate.Spend
	crossed, moved, spends := s.add(a, now, t.cfg.quotaLoc, to == nil || t.spends == nil, buf[:0])
	t.budgetChanged(s, crossed, moved, now)
	if to != nil && t.spends != nil {
		t.spends.queue(s, s.scope == sharedstate.SpendClient, spends)
	}
}

// budgetChanged logs a budget used up (moved) and alerts the thresholds
// crossed.
func (t *Transport) budgetChanged(s *spendState, crossed []budgetCrossing, moved *spentMark, now time.Time) {
	if moved != nil && t.cfg.logger != nil {
		until := time.Unix(0, moved.until).In(now.Location())
		if s.scope == sharedstate.SpendKey {
			t.cfg.logger.Info("apipool: key budget used up; the key rests until the period ends", "key", s.id, "budget", string(budgetKinds[moved.i]), "until", until)
		} else {
			t.cfg.logger.Info("apipool: client budget used up; its requests are refused until the period ends", "client", s.id, "budget", string(budgetKinds[moved.i]), "until", until)
		}
	}
	if t.alerts == nil {
		return
	}
	for _, c := range crossed {
		al := Alert{Kind: AlertBudgetNear, Time: now, Until: c.until}
		what := describe(c.i) + " " + fmtAmount(c.used) + " of " + fmtAmount(c.limit)
		if c.spent {
			al.Kind = AlertBudgetSpent
			al.Reason = what + ": used up until the period ends"
		} else {
			al.Reason = what + ": 80% used"
		}
		if s.scope == sharedstate.SpendKey {
			al.KeyID = s.id
		} else {
			al.Client = s.id
		}
		t.alert(al)
	}
}

// spendSync sends a pool's spends to the shared stores (sharedstate.Spender)
// off the request path, merged per budget and period, and takes in the
// totals they answer.
type spendSync struct {
	t      *Transport
	ch     chan pendingSpend
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// failed holds the spends of calls that failed, merged per budget and
	// period: the loop sends them again with the next batch, or after a
	// backoff when no spend comes, until their period ends. Only the
	// loop uses it.
	failed []pendingSpend
}

// pendingSpend is one spend waiting to be shared, for the state it counts
// in: to the clients' store (ClientBudgets) when client, else to the
// pool's (keySpender).
type pendingSpend struct {
	client bool
	s      *spendState
	sp     sharedstate.Spend
}

const (
	// spendBatch bounds the spends sent in one call.
	spendBatch = 256
	// maxFailedSpends bounds the failed spends kept to be sent again
	// (each a budget and period of one key or client): past it the
	// oldest are dropped, counted in SharedStateHealth.Dropped.
	maxFailedSpends = 512
	// spendRetryMin and spendRetryMax bound the wait before failed spends
	// are sent again when no new spend comes; it doubles at each failure.
	spendRetryMin = time.Second
	spendRetryMax = 30 * time.Second
)

func (t *Transport) startSpends() {
	if t.keySpender == nil && (t.cfg.clients == nil || t.cfg.clients.shared == nil) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.spends = &spendSync{t: t, ch: make(chan pendingSpend, sharedQueueSize), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go t.spends.loop()
}

// queue hands spends of s to the loop, without blocking: when the queue is
// full they are dropped (counted in SharedStateHealth.Dropped) and count in
// this replica only.
func (ss *spendSync) queue(s *spendState, client bool, spends []sharedstate.Spend) {
	for _, sp := range spends {
		select {
		case ss.ch <- pendingSpend{client: client, s: s, sp: sp}:
		default:
			if sh := ss.t.shared; sh != nil {
				sh.dropped.Add(1)
			}
		}
	}
}

func (ss *spendSync) loop() {
	defer close(ss.done)
	batch := make([]pendingSpend, 0, spendBatch+maxFailedSpends)
	var retry clock.Timer // armed while spends have failed
	var retryC <-chan time.Time
	backoff := spendRetryMin
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		batch = batch[:0]
		select {
		case p := <-ss.ch:
			batch = append(batch, p)
		case <-retryC:
			retry, retryC = nil, nil
		case <-ss.ctx.Done():
			return
		}
	more:
		for len(batch) < spendBatch {
			select {
			case p := <-ss.ch:
				batch = append(batch, p)
			default:
				break more
			}
		}
		batch = ss.takeFailed(batch)
		if len(batch) > 0 {
			ss.send(batch)
		}
		switch {
		case len(ss.failed) == 0:
			backoff = spendRetryMin
		case retry == nil:
			retry = ss.t.cfg.clock.NewTimer(backoff)
			retryC = retry.C()
			backoff = min(2*backoff, spendRetryMax)
		}
	}
}

// takeFailed appends to batch the failed spends whose period has not
// ended, and forgets them: send keeps those that fail again.
func (ss *spendSync) takeFailed(batch []pendingSpend) []pendingSpend {
	if len(ss.failed) == 0 {
		return batch
	}
	now := ss.t.cfg.clock.Now()
	for _, p := range ss.failed {
		if p.sp.End.After(now) {
			batch = append(batch, p)
		}
	}
	clear(ss.failed)
	ss.failed = ss.failed[:0]
	return batch
}

// keepFailed keeps the spends of a failed call to send them again, the
// oldest dropped (and counted) past maxFailedSpends.
func (ss *spendSync) keepFailed(group []pendingSpend) {
	ss.failed = append(ss.failed, group...)
	if over := len(ss.failed) - maxFailedSpends; over > 0 {
		if sh := ss.t.shared; sh != nil {
			sh.dropped.Add(uint64(over))
		}
		ss.failed = append(ss.failed[:0], ss.failed[over:]...)
	}
}

// send merges batch per store, budget and period, and sends each store its
// spends in one call.
func (ss *spendSync) send(batch []pendingSpend) {
	type id struct {
		s      *spendState
		budget string
		period uint64
	}
	var groups [2][]pendingSpend // the keys', the clients'
	at := make(map[id]int, len(batch))
	for _, p := range batch {
		g := &groups[0]
		if p.client {
			g = &groups[1]
		}
		k := id{p.s, p.sp.Budget, p.sp.Period}
		if j, ok := at[k]; ok {
			(*g)[j].sp.Amount += p.sp.Amount
			continue
		}
		at[k] = len(*g)
		*g = append(*g, p)
	}
	if len(groups[0]) > 0 {
		ss.sendTo(ss.t.keySpender, false, groups[0])
	}
	if len(groups[1]) > 0 {
		ss.sendTo(ss.t.cfg.clients.shared, true, groups[1])
	}
}

func (ss *spendSync) sendTo(to sharedstate.Spender, client bool, group []pendingSpend) {
	t := ss.t
	spends := make([]sharedstate.Spend, len(group))
	for i, p := range group {
		spends[i] = p.sp
	}
	ctx, cancel := context.WithTimeout(ss.ctx, 5*time.Second)
	totals, err := to.Spend(ctx, spends)
	cancel()
	if err == nil && len(totals) != len(spends) {
		err = fmt.Errorf("apipool: the shared store answered %d totals for %d spends", len(totals), len(spends))
	}
	now := t.cfg.clock.Now()
	if err != nil {
		if ss.ctx.Err() != nil {
			return
		}
		if sh := t.shared; sh != nil && !client {
			sh.fault("spend", err)
		} else if t.cfg.logger != nil {
			t.cfg.logger.Warn("apipool: a shared store failed to count spend; this replica counts its own", "error", err.Error())
		}
		ss.keepFailed(group)
		seen := map[*spendState]bool{}
		for _, p := range group {
			if !seen[p.s] {
				seen[p.s] = true
				t.budgetChanged(p.s, p.s.crossedLocally(now, t.cfg.quotaLoc), nil, now)
			}
		}
		return
	}
	if sh := t.shared; sh != nil && !client {
		sh.ok()
	}
	for i, p := range group {
		crossed, moved := p.s.noteTotal(budgetIndex(p.sp.Budget), p.sp.Period, p.sp.End, totals[i], p.sp.Amount, now)
		t.budgetChanged(p.s, crossed, moved, now)
	}
}

func budgetIndex(name string) int {
	for i, k := range budgetKinds {
		if string(k) == name {
			return i
		}
	}
	return 0
}

// stop tells the loop to end (Close waits for done).
func (ss *spendSync) stop() { ss.cancel() }
