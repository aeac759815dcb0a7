//go:build !amd64 || !gc || purego

package chunker

const haveVector = false

func rollAVX512(t *[256]uint64, mk *mixKey, t1 uint64, d uint64, win *byte, n int, ds *uint64, mask *uint64) uint64 {
	panic("chunker: rollAVX512 without AVX-512")
}

func encrypt8(xk *[240]byte, b *[8][16]byte) {
	panic("chunker: encrypt8 without AES-NI")
}
