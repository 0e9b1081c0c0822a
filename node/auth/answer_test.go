package auth

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeAnswer(t *testing.T) {
	tests := []struct {
		in      string
		want    Answer
		wantErr bool
	}{
		{in: `{"auth_token":"t","service":"s"}`, want: Answer{Token: "t", Service: "s"}},
		{in: `{"auth_token":"t","upstream":"a:1"}`, want: Answer{Token: "t", Upstreams: []string{"a:1"}}},
		{in: `{"auth_token":"t","upstream":"a:1, b:2 ,c:3"}`, want: Answer{Token: "t", Upstreams: []string{"a:1", "b:2", "c:3"}}},
		{in: `{"auth_token":"t","upstream":" , "}`, want: Answer{Token: "t"}},
		{in: `{"auth_token":"t","service":"s","upstream":"a:1","extra":{"x":[1]}}`, want: Answer{Token: "t", Service: "s", Upstreams: []string{"a:1"}}},
		{in: ` {"auth_token":"t"} `, want: Answer{Token: "t"}},
		{in: `{"auth_token":null}`, wantErr: true},
		{in: `{"auth_token":""}`, wantErr: true},
		{in: `{}`, wantErr: true},
		{in: `[]`, wantErr: true},
		{in: `null`, wantErr: true},
		{in: ``, wantErr: true},
		{in: `{"auth_token":"t"} trailing`, wantErr: true},
		{in: `{"auth_token":["t"]}`, wantErr: true},
		{in: `{"auth_token":"t","upstream":["a:1"]}`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := DecodeAnswer([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("DecodeAnswer(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DecodeAnswer(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// FuzzDecodeAnswer feeds the decoder arbitrary bytes, as a broken or
// hostile authorization server could: it must not panic, and whatever it
// accepts must be a usable answer that survives a round trip.
func FuzzDecodeAnswer(f *testing.F) {
	for _, s := range []string{
		`{"auth_token":"t","service":"s"}`,
		`{"auth_token":"t","upstream":"10.0.0.1:3001,10.0.0.2:3002"}`,
		`{"auth_token":"t","upstream":" , a:1 ,,"}`,
		`{"auth_token":null}`,
		`{"auth_token":"\u0000","service":"\ud800"}`,
		`[1,2,3]`,
		`{"auth_token":"t","auth_token":"u"}`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAnswer(b)
		if err != nil {
			if !reflect.DeepEqual(a, Answer{}) {
				t.Fatalf("error %v with a non-zero answer %+v", err, a)
			}
			return
		}
		if a.Token == "" {
			t.Fatal("accepted an answer without a token")
		}
		for _, u := range a.Upstreams {
			if u == "" || u != strings.TrimSpace(u) || strings.Contains(u, ",") {
				t.Fatalf("upstream %q not split or trimmed", u)
			}
		}
		if a.Upstreams != nil && len(a.Upstreams) == 0 {
			t.Fatal("empty non-nil upstream list")
		}
		again, err := json.Marshal(map[string]string{
			"auth_token": a.Token,
			"service":    a.Service,
			"upstream":   strings.Join(a.Upstreams, ","),
		})
		if err != nil {
			t.Fatal(err)
		}
		b2, err := DecodeAnswer(again)
		if err != nil {
			t.Fatalf("re-encoded answer %s rejected: %v", again, err)
		}
		if !reflect.DeepEqual(a, b2) {
			t.Fatalf("round trip: %+v became %+v", a, b2)
		}
	})
}
