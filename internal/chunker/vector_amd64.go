//go:build gc && !purego

package chunker

import "golang.org/x/sys/cpu"

// haveVector reports whether this CPU runs rollAVX512 and encrypt8.
// GODEBUG=cpu.avx512f=off (or cpu.avx512dq=off, cpu.aes=off) turns it off.
var haveVector = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAES

// rollAVX512 rolls the digest d over n windows (a multiple of 8; none if 0):
// window i drops win[i] and takes in win[i+WindowSize]. It stores the
// digest after window i in ds[i], stores the pre-filter result of windows
// 8g..8g+7 (bit j set iff mk.apply(ds[8g+j]) < t1) in byte g of mask, read
// as little-endian bytes, and returns ds[n-1].
//
//go:noescape
func rollAVX512(t *[256]uint64, mk *mixKey, t1 uint64, d uint64, win *byte, n int, ds *uint64, mask *uint64) uint64

// encrypt8 encrypts the eight blocks of b in place with AES-256 under the
// expanded key xk (expandKey256). Eight independent blocks keep the AES
// unit busy where one block at a time waits out each round's latency.
//
//go:noescape
func encrypt8(xk *[240]byte, b *[8][16]byte)
