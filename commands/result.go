package commands

import (
	"bytes"
	"encoding/json"
)

// Result is what a command produced: CloudHSM CLI's envelope.
type Result struct {
	// ErrorCode is 0 on success and 1 on failure.
	ErrorCode int `json:"error_code"`
	// Data is an object (or, where CloudHSM CLI prints one, a plain
	// string: see Status) on success and a readable message on failure.
	Data any `json:"data"`
	// Text, when set, is what the result prints as instead of the
	// envelope: help, which CloudHSM CLI prints as text to read. Data
	// then still holds help's machine form (CommandHelp, or the command
	// list), which help --json prints.
	Text string `json:"-"`
	// Quit asks the interactive loop to stop.
	Quit bool `json:"-"`
}

// OK reports whether the command succeeded.
func (r Result) OK() bool { return r.ErrorCode == 0 }

// Message is a result that carries only a sentence, as an object:
// {"message": "Key deleted successfully"}.
type Message struct {
	Message string `json:"message"`
}

// Status is a result whose data CloudHSM CLI prints as a plain string,
// not an object: "data": "Logout successful".
type Status string

func success(data any) Result {
	if s, ok := data.(string); ok {
		data = Message{Message: s}
	}
	return Result{ErrorCode: 0, Data: data}
}

func failure(err error) Result {
	return Result{ErrorCode: 1, Data: err.Error()}
}

// JSON renders the result as the shell prints it: the envelope indented
// as CloudHSM CLI prints it, with a trailing newline; or, for a result
// that is text (help), that text.
func (r Result) JSON() []byte {
	if r.Text != "" {
		return []byte(r.Text)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		// Only a data value that cannot be encoded gets here; report it
		// rather than print half a document.
		buf.Reset()
		enc.Encode(Result{ErrorCode: 1, Data: "internal error: result cannot be encoded: " + err.Error()})
	}
	return buf.Bytes()
}
