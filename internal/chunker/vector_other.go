//go:build !amd64 || !gc || purego

package chunker

const haveVector = false

func rollLanes(t *[256]uint64, mk *mixKey, t1 uint64, win *byte, stride int, n int, ls *uint64, ds *uint64, mask *byte) {
	panic("chunker: rollLanes without AVX-512")
}

func encrypt8(xk *[240]byte, b *[8][16]byte) {
	panic("chunker: encrypt8 without AES-NI")
}
