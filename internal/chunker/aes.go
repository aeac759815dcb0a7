package chunker

import (
	"crypto/subtle"
	"sync"
)

// sbox returns the AES S-box (FIPS 197, 5.1.1): the multiplicative inverse
// in GF(2^8) followed by the affine map. It is computed rather than written
// out; TestExpandKey256 checks the expanded keys against crypto/aes.
var sbox = sync.OnceValue(func() (s [256]byte) {
	for x := range 256 {
		b := gfInverse(byte(x))
		s[x] = b ^ rotl8(b, 1) ^ rotl8(b, 2) ^ rotl8(b, 3) ^ rotl8(b, 4) ^ 0x63
	}
	return s
})

func rotl8(b byte, n uint) byte { return b<<n | b>>(8-n) }

// gfMul multiplies in GF(2^8) modulo x^8+x^4+x^3+x+1.
func gfMul(a, b byte) byte {
	var p byte
	for ; b != 0; b >>= 1 {
		if b&1 != 0 {
			p ^= a
		}
		a = a<<1 ^ 0x1b*(a>>7)
	}
	return p
}

// gfInverse returns x^254, the inverse of x (0 for 0).
func gfInverse(x byte) byte {
	r := byte(1)
	for range 254 {
		r = gfMul(r, x)
	}
	return r
}

// subByte returns s[x] without a memory access that depends on x: it reads
// every entry, because x is derived from the secret key and a table lookup
// would leak it through the cache.
func subByte(s *[256]byte, x byte) byte {
	var r byte
	for i := range s {
		r |= s[i] & -byte(subtle.ConstantTimeByteEq(byte(i), x))
	}
	return r
}

// expandKey256 is the AES-256 key schedule (FIPS 197, 5.2): 15 round keys
// in the byte order AESENC takes them.
func expandKey256(key [32]byte) (xk [240]byte) {
	sbox := sbox()
	copy(xk[:], key[:])
	rcon := byte(1)
	for i := 32; i < len(xk); i += 4 {
		t := [4]byte(xk[i-4 : i])
		switch i % 32 {
		case 0:
			t = [4]byte{subByte(&sbox, t[1]) ^ rcon, subByte(&sbox, t[2]), subByte(&sbox, t[3]), subByte(&sbox, t[0])}
			rcon <<= 1 // AES-256 uses 7 round constants, 0x01..0x40
		case 16:
			t = [4]byte{subByte(&sbox, t[0]), subByte(&sbox, t[1]), subByte(&sbox, t[2]), subByte(&sbox, t[3])}
		}
		for j := range 4 {
			xk[i+j] = xk[i-32+j] ^ t[j]
		}
	}
	return xk
}
