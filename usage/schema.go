package usage

// This file holds what the token readers look for: a small tree of the
// JSON paths (from the root of a JSON answer, or of one SSE event's data)
// that lead to a usage object and to its counts. The meter walks an answer
// along this tree and skims every value no path goes through.

// The counts a usage object can hold; a record keeps one value per slot.
const (
	slotPromptTokens     = iota // OpenAI chat, completions, embeddings: usage.prompt_tokens
	slotCompletionTokens        // usage.completion_tokens
	slotInputTokens             // OpenAI responses, Anthropic: usage.input_tokens
	slotOutputTokens            // usage.output_tokens
	slotPromptCached            // usage.prompt_tokens_details.cached_tokens
	slotInputCached             // usage.input_tokens_details.cached_tokens
	slotCacheRead               // Anthropic: usage.cache_read_input_tokens
	slotCacheCreation           // Anthropic: usage.cache_creation_input_tokens
	slotGPrompt                 // Gemini: usageMetadata.promptTokenCount
	slotGCandidates             // usageMetadata.candidatesTokenCount
	slotGCached                 // usageMetadata.cachedContentTokenCount
	slotGThoughts               // usageMetadata.thoughtsTokenCount
	slotGToolUse                // usageMetadata.toolUsePromptTokenCount
	slotGTotal                  // usageMetadata.totalTokenCount
	numSlots
)

const geminiSlots = 1<<slotGPrompt | 1<<slotGCandidates | 1<<slotGCached | 1<<slotGThoughts | 1<<slotGToolUse | 1<<slotGTotal

// groupKind says what closing a usage object means.
type groupKind uint8

const (
	groupNone   groupKind = iota
	groupUsage            // a final usage object: OpenAI's usage and response.usage, Anthropic's usage (message or message_delta)
	groupStart            // Anthropic's message_start message.usage: input known, output not final
	groupGemini           // Gemini's usageMetadata: cumulative, zero counts left out
)

type dialect uint8

const (
	dialectOpenAI dialect = iota
	dialectAnthropic
	dialectGemini
	dialectAuto
)

// node is one step of a path: a key of an object (name), or the elements
// of an array (elem of its parent).
type node struct {
	name    string
	kids    []int16 // nodes of the keys this object's paths go through
	kidLens uint64  // bit n set: a kid's name has n bytes
	elem    int16   // node of this array's elements, or -1
	slot    int8    // the count a number here is, or -1
	group   groupKind
	marker  bool // a string here is Gemini's finishReason: the chunk is the last one
	element bool // closing this object ends one answer object (the root, or a root array's element)
}

type schema struct {
	nodes   []node
	dialect dialect
}

func (s *schema) newNode(name string) int16 {
	s.nodes = append(s.nodes, node{name: name, elem: -1, slot: -1})
	return int16(len(s.nodes) - 1)
}

// key returns the child of parent named name, made if needed.
func (s *schema) key(parent int16, name string) int16 {
	for _, k := range s.nodes[parent].kids {
		if s.nodes[k].name == name {
			return k
		}
	}
	k := s.newNode(name)
	s.nodes[parent].kids = append(s.nodes[parent].kids, k)
	s.nodes[parent].kidLens |= 1 << len(name)
	return k
}

// elem returns the node of parent's array elements, made if needed.
func (s *schema) elem(parent int16) int16 {
	if e := s.nodes[parent].elem; e >= 0 {
		return e
	}
	e := s.newNode("")
	s.nodes[parent].elem = e
	return e
}

func (s *schema) field(parent int16, name string, slot int8) {
	s.nodes[s.key(parent, name)].slot = slot
}

// usageObject adds parent.name as a usage object of OpenAI's or
// Anthropic's shape.
func (s *schema) usageObject(parent int16, name string, kind groupKind) {
	g := s.key(parent, name)
	s.nodes[g].group = kind
	s.field(g, "prompt_tokens", slotPromptTokens)
	s.field(g, "completion_tokens", slotCompletionTokens)
	s.field(g, "input_tokens", slotInputTokens)
	s.field(g, "output_tokens", slotOutputTokens)
	s.field(s.key(g, "prompt_tokens_details"), "cached_tokens", slotPromptCached)
	s.field(s.key(g, "input_tokens_details"), "cached_tokens", slotInputCached)
	s.field(g, "cache_read_input_tokens", slotCacheRead)
	s.field(g, "cache_creation_input_tokens", slotCacheCreation)
}

// gemini adds Gemini's usageMetadata and candidates[].finishReason under
// the answer object obj.
func (s *schema) gemini(obj int16) {
	g := s.key(obj, "usageMetadata")
	s.nodes[g].group = groupGemini
	s.field(g, "promptTokenCount", slotGPrompt)
	s.field(g, "candidatesTokenCount", slotGCandidates)
	s.field(g, "cachedContentTokenCount", slotGCached)
	s.field(g, "thoughtsTokenCount", slotGThoughts)
	s.field(g, "toolUsePromptTokenCount", slotGToolUse)
	s.field(g, "totalTokenCount", slotGTotal)
	s.nodes[s.key(s.elem(s.key(obj, "candidates")), "finishReason")].marker = true
}

func newSchema(d dialect) *schema {
	s := &schema{dialect: d}
	root := s.newNode("")
	s.nodes[root].element = true
	if d == dialectOpenAI || d == dialectAuto {
		s.usageObject(root, "usage", groupUsage)
		s.usageObject(s.key(root, "response"), "usage", groupUsage)
	}
	if d == dialectAnthropic || d == dialectAuto {
		s.usageObject(root, "usage", groupUsage)
		s.usageObject(s.key(root, "message"), "usage", groupStart)
	}
	if d == dialectGemini || d == dialectAuto {
		s.gemini(root)
		// streamGenerateContent without alt=sse answers one JSON array
		// of the chunks.
		e := s.elem(root)
		s.nodes[e].element = true
		s.gemini(e)
	}
	return s
}

var (
	schemaOpenAI    = newSchema(dialectOpenAI)
	schemaAnthropic = newSchema(dialectAnthropic)
	schemaGemini    = newSchema(dialectGemini)
	schemaAuto      = newSchema(dialectAuto)
)

// maxKey is the length of the longest key on a path
// (cache_creation_input_tokens), rounded up.
const maxKey = 32

// maxFrames bounds the objects and arrays open along a path at once. The
// deepest path (root, response, usage, input_tokens_details) opens 4;
// everything off the paths is skimmed with a counter.
const maxFrames = 8
