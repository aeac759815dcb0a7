//go:build gc && !purego

#include "textflag.h"

// rots is the rotation of the carried digest for the window ending after
// each of 8 positions: lane j holds j+1.
DATA rots<>+0x00(SB)/8, $1
DATA rots<>+0x08(SB)/8, $2
DATA rots<>+0x10(SB)/8, $3
DATA rots<>+0x18(SB)/8, $4
DATA rots<>+0x20(SB)/8, $5
DATA rots<>+0x28(SB)/8, $6
DATA rots<>+0x30(SB)/8, $7
DATA rots<>+0x38(SB)/8, $8
GLOBL rots<>(SB), RODATA|NOPTR, $64

// LEAD is how many groups of 8 windows the table lookups run ahead.
#define LEAD 4

// One table lookup pair: X = T[win[off]] ^ T[win[off+64]], stored at
// 8*off(R13).
#define XPAIR(off) \
	MOVBQZX off(SI), AX; \
	MOVBQZX (off+64)(SI), BX; \
	MOVQ    (R8)(AX*8), AX; \
	XORQ    (R8)(BX*8), AX; \
	MOVQ    AX, (8*off)(R13)

// Hillis–Steele step of the digest scan: Z0[j] ^= rotl(Z0[j-s], s), with
// zeros (Z12) shifted in below lane s. imm is 8-s.
#define SCAN(imm, s) \
	VALIGNQ $imm, Z12, Z0, Z1; \
	VPROLQ  $s, Z1, Z1; \
	VPXORQ  Z1, Z0, Z0

// XGROUP stores X for the next 8 windows at (R13) and advances SI and R13.
#define XGROUP \
	XPAIR(0); XPAIR(1); XPAIR(2); XPAIR(3); XPAIR(4); XPAIR(5); XPAIR(6); XPAIR(7); \
	ADDQ $8, SI; \
	ADDQ $64, R13

// VGROUP turns the 8 X at (DI) into digests in place, stores their
// pre-filter mask byte at (DX), and advances DI and DX. Z9 carries the
// last digest in every lane.
#define VGROUP \
	VMOVDQU64 (DI), Z0; \
	SCAN(7, 1); \
	SCAN(6, 2); \
	SCAN(4, 4); \
	VPERMQ    Z0, Z11, Z3; \
	VPROLVQ   Z10, Z9, Z1; \
	VPXORQ    Z1, Z0, Z0; \
	VMOVDQU64 Z0, (DI); \
	VPROLQ    $8, Z9, Z9; \
	VPXORQ    Z3, Z9, Z9; \
	VPXORQ    Z4, Z0, Z1; \
	VPMULLQ   Z5, Z1, Z1; \
	VPSRLQ    $32, Z1, Z2; \
	VPXORQ    Z2, Z1, Z1; \
	VPXORQ    Z6, Z1, Z1; \
	VPMULLQ   Z7, Z1, Z1; \
	VPCMPUQ   $1, Z8, Z1, K1; \
	KMOVB     K1, AX; \
	MOVB      AX, (DX); \
	ADDQ      $64, DI; \
	INCQ      DX

// func rollAVX512(t *[256]uint64, mk *mixKey, t1 uint64, d uint64, win *byte, n int, ds *uint64, mask *uint64) uint64
// Requires: AVX512F, AVX512DQ
//
// The scalar table lookups (XGROUP) run LEAD groups ahead of the vector
// scan and mix (VGROUP) in one loop, so the integer and vector units work
// at once, and the vector load of a group's X finds its stores retired.
TEXT ·rollAVX512(SB), NOSPLIT, $0-72
	MOVQ t+0(FP), R8
	MOVQ mk+8(FP), R9
	MOVQ win+32(FP), SI
	MOVQ n+40(FP), CX
	MOVQ ds+48(FP), DI
	MOVQ mask+56(FP), DX
	VPBROADCASTQ 0(R9), Z4          // k0
	VPBROADCASTQ 8(R9), Z5          // m0
	VPBROADCASTQ 16(R9), Z6         // k1
	VPBROADCASTQ 24(R9), Z7         // m1
	VPBROADCASTQ t1+16(FP), Z8
	VPBROADCASTQ d+24(FP), Z9       // carried digest, in every lane
	VMOVDQU64    rots<>(SB), Z10
	MOVQ         $7, AX
	VPBROADCASTQ AX, Z11             // lane index 7
	VPXORQ       Z12, Z12, Z12

	SHRQ $3, CX                      // groups of 8 windows
	JZ   none
	MOVQ DI, R13
	MOVQ CX, R10
	CMPQ R10, $LEAD
	JLE  lead
	MOVQ $LEAD, R10

lead:
	XGROUP
	DECQ R10
	JNZ  lead

	MOVQ CX, R10
	SUBQ $LEAD, R10                  // groups with lookups still to do
	JLE  tail

both:
	XGROUP
	VGROUP
	DECQ R10
	JNZ  both

tail:
	MOVQ CX, R10
	CMPQ R10, $LEAD
	JLE  last
	MOVQ $LEAD, R10

last:
	VGROUP
	DECQ R10
	JNZ  last

	MOVQ -8(DI), AX
	VZEROUPPER
	MOVQ AX, ret+64(FP)
	RET

none:
	VZEROUPPER
	MOVQ d+24(FP), AX
	MOVQ AX, ret+64(FP)
	RET

// One AES round on the eight blocks in X0–X7 with the round key at off(AX).
#define ROUND8(op, off) \
	MOVOU off(AX), X8; \
	op    X8, X0; \
	op    X8, X1; \
	op    X8, X2; \
	op    X8, X3; \
	op    X8, X4; \
	op    X8, X5; \
	op    X8, X6; \
	op    X8, X7

// func encrypt8(xk *[240]byte, b *[8][16]byte)
// Requires: AES
TEXT ·encrypt8(SB), NOSPLIT, $0-16
	MOVQ  xk+0(FP), AX
	MOVQ  b+8(FP), BX
	MOVOU 0(BX), X0
	MOVOU 16(BX), X1
	MOVOU 32(BX), X2
	MOVOU 48(BX), X3
	MOVOU 64(BX), X4
	MOVOU 80(BX), X5
	MOVOU 96(BX), X6
	MOVOU 112(BX), X7
	ROUND8(PXOR, 0)
	ROUND8(AESENC, 16)
	ROUND8(AESENC, 32)
	ROUND8(AESENC, 48)
	ROUND8(AESENC, 64)
	ROUND8(AESENC, 80)
	ROUND8(AESENC, 96)
	ROUND8(AESENC, 112)
	ROUND8(AESENC, 128)
	ROUND8(AESENC, 144)
	ROUND8(AESENC, 160)
	ROUND8(AESENC, 176)
	ROUND8(AESENC, 192)
	ROUND8(AESENC, 208)
	ROUND8(AESENCLAST, 224)
	MOVOU X0, 0(BX)
	MOVOU X1, 16(BX)
	MOVOU X2, 32(BX)
	MOVOU X3, 48(BX)
	MOVOU X4, 64(BX)
	MOVOU X5, 80(BX)
	MOVOU X6, 96(BX)
	MOVOU X7, 112(BX)
	RET

