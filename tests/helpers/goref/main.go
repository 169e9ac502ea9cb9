// goref renders Go templates with Go's own text/template and sprig, for the engine's differential
// tests: one JSON case per input line ({"template": ..., "data": ...}), one JSON result per output
// line ({"out": ..., "err": ...}). Options as Warewulf sets them: missingkey=default, sprig.TxtFuncMap.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
)

type testCase struct {
	Template string      `json:"template"`
	Data     interface{} `json:"data"`
}

type result struct {
	Out string `json:"out"`
	Err string `json:"err"`
}

// ints turns whole JSON numbers into Go ints (as a Go program's data would hold them).
func ints(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i)
		}
		f, _ := x.Float64()
		return f
	case map[string]interface{}:
		for k, e := range x {
			x[k] = ints(e)
		}
	case []interface{}:
		for i, e := range x {
			x[i] = ints(e)
		}
	}
	return v
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c testCase
		dec := json.NewDecoder(strings.NewReader(in.Text()))
		dec.UseNumber()
		if err := dec.Decode(&c); err != nil {
			_ = out.Encode(result{Err: "bad case: " + err.Error()})
			continue
		}
		var r result
		t, err := template.New("t").Option("missingkey=default").Funcs(sprig.TxtFuncMap()).Parse(c.Template)
		if err != nil {
			r.Err = err.Error()
		} else {
			var b strings.Builder
			if err := t.Execute(&b, ints(c.Data)); err != nil {
				r.Err = err.Error()
			}
			r.Out = b.String()
		}
		_ = out.Encode(r)
	}
}
