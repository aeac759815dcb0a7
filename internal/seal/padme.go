package seal

import (
	"errors"
	"math/bits"
)

// PadmeLen returns Padmé(n) (Nikitin et al., "Reducing Metadata Leakage from
// Encrypted Files and Communication with PURBs", PoPETs 2019): n rounded up
// so that only its top ⌊log2 E⌋+1 bits below the leading one (E = ⌊log2 n⌋)
// may be non-zero. The overhead is at most 12% (less for larger n) and a
// padded length leaks O(log log n) bits instead of O(log n).
func PadmeLen(n int) int {
	if n < 2 {
		return n
	}
	e := bits.Len(uint(n)) - 1 // ⌊log2 n⌋
	s := bits.Len(uint(e))     // ⌊log2 e⌋ + 1
	mask := 1<<(e-s) - 1
	return (n + mask) &^ mask
}

// ErrPadding is returned by Unpad for bytes that are not padded by Pad.
var ErrPadding = errors.New("seal: malformed padding")

// Pad returns body ‖ 0x80 ‖ 0x00… of length PadmeLen(len(body)+1), in a new
// buffer.
func Pad(body []byte) []byte {
	return PadInto(make([]byte, PadmeLen(len(body)+1)), body)
}

// PadInto is Pad writing into dst, whose length must be
// PadmeLen(len(body)+1) and which must not overlap body. Its old contents
// do not matter.
func PadInto(dst, body []byte) []byte {
	if len(dst) != PadmeLen(len(body)+1) {
		panic("seal: PadInto: wrong destination length")
	}
	copy(dst, body)
	dst[len(body)] = 0x80
	clear(dst[len(body)+1:])
	return dst
}

// Unpad strips what Pad added. Only the canonical form is accepted: the
// last non-zero byte is 0x80 and the total length is exactly the Padmé
// length of what precedes it plus one.
func Unpad(b []byte) ([]byte, error) {
	i := len(b) - 1
	for i >= 0 && b[i] == 0 {
		i--
	}
	if i < 0 || b[i] != 0x80 || PadmeLen(i+1) != len(b) {
		return nil, ErrPadding
	}
	return b[:i], nil
}
