package kv

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseKeys feeds arbitrary bytes to ParseKeys: it must never panic,
// must reject anything but a valid key file with ErrInvalidKeys, and what it
// accepts must marshal back to the same bytes.
func FuzzParseKeys(f *testing.F) {
	k, _ := GenerateKeys()
	full, _ := k.MarshalBinary()
	wo, _ := k.WriteOnly().MarshalBinary()
	f.Add(full)
	f.Add(wo)
	f.Add([]byte(keysMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKeys(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidKeys) {
				t.Fatalf("error not ErrInvalidKeys: %v", err)
			}
			return
		}
		again, err := k.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted keys do not round-trip")
		}
	})
}
