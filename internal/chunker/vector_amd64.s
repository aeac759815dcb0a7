//go:build gc && !purego

#include "textflag.h"

// LEAP is how many rows the lanes' table lookups run ahead of their vector
// work in rollLanes.
#define LEAP 4

// One lane's table lookup for the row: L = T[(SI)(lane offset)], stored in
// the lane's slot of the row at (R13).
#define LLOOK(addr, slot) \
	MOVBQZX addr, AX; \
	MOVQ    (R8)(AX*8), AX; \
	MOVQ    AX, (8*slot)(R13)

// LROW looks up the next row's 8 incoming bytes, one per lane (lane l
// reads l*stride past SI: R9 = stride, R10 = 3*stride, R11 = 5*stride,
// R12 = 7*stride), and advances SI and R13.
#define LROW \
	LLOOK((SI), 0); \
	LLOOK((SI)(R9*1), 1); \
	LLOOK((SI)(R9*2), 2); \
	LLOOK((SI)(R10*1), 3); \
	LLOOK((SI)(R9*4), 4); \
	LLOOK((SI)(R11*1), 5); \
	LLOOK((SI)(R10*2), 6); \
	LLOOK((SI)(R12*1), 7); \
	INCQ SI; \
	ADDQ $64, R13

// VROW rolls the 8 lanes' digests in Z9 by one row: X is the row's L at
// 4096(BX) (incoming) XOR the L 64 rows before it at (BX) (leaving). It
// stores the digests at (DI) and the row's pre-filter mask byte at (DX),
// and advances BX, DI and DX.
#define VROW \
	VMOVDQU64 (BX), Z0; \
	VPXORQ    4096(BX), Z0, Z0; \
	VPROLQ    $1, Z9, Z9; \
	VPXORQ    Z0, Z9, Z9; \
	VMOVDQU64 Z9, (DI); \
	VPXORQ    Z4, Z9, Z1; \
	VPMULLQ   Z5, Z1, Z1; \
	VPSRLQ    $32, Z1, Z2; \
	VPXORQ    Z2, Z1, Z1; \
	VPXORQ    Z6, Z1, Z1; \
	VPMULLQ   Z7, Z1, Z1; \
	VPCMPUQ   $1, Z8, Z1, K1; \
	KMOVB     K1, AX; \
	MOVB      AX, (DX); \
	ADDQ      $64, BX; \
	ADDQ      $64, DI; \
	INCQ      DX

// func rollLanes(t *[256]uint64, mk *mixKey, t1 uint64, win *byte, stride int, n int, ls *uint64, ds *uint64, mask *byte)
// Requires: AVX512F, AVX512DQ
//
// Each lane is one digest rolled along its own stretch of bytes, so no
// lane waits for another: a row costs one rotate and two XORs for 8
// windows, where 8 windows of one stretch would need a prefix scan (three
// shuffles, rotates and XORs, and a carry). The scalar table lookups
// (LROW) run LEAP rows ahead of the vector work (VROW) in one loop, so the
// integer and vector units work at once, and a row's vector load finds its
// lookups' stores retired.
TEXT ·rollLanes(SB), NOSPLIT, $0-72
	MOVQ t+0(FP), R8
	MOVQ mk+8(FP), AX
	VPBROADCASTQ 0(AX), Z4          // k0
	VPBROADCASTQ 8(AX), Z5          // m0
	VPBROADCASTQ 16(AX), Z6         // k1
	VPBROADCASTQ 24(AX), Z7         // m1
	VPBROADCASTQ t1+16(FP), Z8
	VPXORQ       Z9, Z9, Z9          // every lane starts from the zero digest
	MOVQ win+24(FP), SI
	MOVQ stride+32(FP), R9
	LEAQ (R9)(R9*2), R10
	LEAQ (R9)(R9*4), R11
	LEAQ (R10)(R9*4), R12
	MOVQ ls+48(FP), BX
	LEAQ 4096(BX), R13               // row 64 of ls: the first incoming L
	MOVQ ds+56(FP), DI
	MOVQ mask+64(FP), DX

	CMPQ n+40(FP), $LEAP             // fewer rows than the lead: nothing to do (callers pass 64 or more)
	JLT  lanesDone
	MOVQ $LEAP, CX
lanesLead:
	LROW
	DECQ CX
	JNZ  lanesLead

	MOVQ n+40(FP), CX
	SUBQ $LEAP, CX
	JZ   lanesTail

lanesBoth:
	LROW
	VROW
	DECQ CX
	JNZ  lanesBoth

lanesTail:
	MOVQ $LEAP, CX

lanesLast:
	VROW
	DECQ CX
	JNZ  lanesLast

lanesDone:
	VZEROUPPER
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

