//go:build gc && !purego

package chunker

import "golang.org/x/sys/cpu"

// haveVector reports whether this CPU runs rollLanes and encrypt8.
// GODEBUG=cpu.avx512f=off (or cpu.avx512dq=off, cpu.aes=off) turns it off.
var haveVector = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAES

// rollLanes rolls 8 digests side by side, each from zero: lane l takes in
// win[l*stride+r] at row r, for n rows (n >= 64; with the first 64 rows the
// lane's digest becomes that of a full window). Row r's leaving byte is the
// one row r-64 took in, its table lookup read from ls: ls holds 8 uint64
// per row (lane l at 8*row+l), rows 0 to 63 zero on entry, and rollLanes
// stores the lookups of rows r at 8*(r+64)+l. It stores the digest of lane
// l after row r in ds[8*r+l] and the pre-filter result (bit l set iff
// mk.apply of it < t1) in mask[r].
//
//go:noescape
func rollLanes(t *[256]uint64, mk *mixKey, t1 uint64, win *byte, stride int, n int, ls *uint64, ds *uint64, mask *byte)

// encrypt8 encrypts the eight blocks of b in place with AES-256 under the
// expanded key xk (expandKey256). Eight independent blocks keep the AES
// unit busy where one block at a time waits out each round's latency.
//
//go:noescape
func encrypt8(xk *[240]byte, b *[8][16]byte)
