/* Run a program natively with ONNX Runtime's AVX2 kernels on an AVX-512 / VNNI x86 CPU.
 *
 * Loaded with LD_PRELOAD, it turns on the kernel's CPUID faulting for the process
 * (arch_prctl(ARCH_SET_CPUID, 0): every CPUID instruction then raises SIGSEGV) and answers each
 * CPUID itself: the real answer with AVX-512, VNNI (AVX-512 and AVX-VNNI), AMX and AVX10 cleared,
 * which is what a Zen 3 reports of them. Libraries that pick kernels by CPUID (ONNX Runtime's
 * MLAS, numpy) then run the kernels they run on an AVX2-only CPU, natively and at full speed:
 * the same instructions in the same order, so the same numbers, unlike qemu-x86_64's emulation
 * which reproduces them at a few seconds a pair. Speed is this CPU's, not an AVX2 CPU's.
 *
 * Needs a CPU and kernel with CPUID faulting (`cpuid_fault` in /proc/cpuinfo flags). Where it is
 * missing, or another SIGSEGV handler replaces this one, the library says so on stderr and the
 * program would see the real CPU: tools/avx2/run.sh checks for that and stops. Not for pytest
 * (its faulthandler takes SIGSEGV): run plain scripts under it.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction previous;
static volatile int answered;

static int cpuid_faulting(int on) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d) {
    if (leaf == 7 && sub == 0) {
        /* ebx: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                (1u << 30) | (1u << 31));
        /* ecx: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* edx: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24,
         * AMX-INT8 25 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* eax: AVX-VNNI 4, AVX512-BF16 5, AMX-FP16 21, AVX-IFMA 23 */
        *a &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        /* edx: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AMX-COMPLEX 8, AVX-VNNI-INT16 10, AVX10 19 */
        *d &= ~((1u << 4) | (1u << 5) | (1u << 8) | (1u << 10) | (1u << 19));
    } else if (leaf == 0x1e || leaf == 0x24) {
        /* AMX tile information, AVX10 versions */
        *a = *b = *c = *d = 0;
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) {
        unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
        cpuid_faulting(0);
        __cpuid_count(leaf, sub, a, b, c, d);
        cpuid_faulting(1);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a;
        r[REG_RBX] = b;
        r[REG_RCX] = c;
        r[REG_RDX] = d;
        r[REG_RIP] += 2;
        answered = 1;
        return;
    }
    /* A real fault: give it to whoever had SIGSEGV before (usually the default: a core dump). */
    sigaction(SIGSEGV, &previous, NULL);
    (void)sig;
    (void)info;
}

__attribute__((constructor)) static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous) != 0 || cpuid_faulting(1) != 0) {
        fprintf(stderr, "cpuid_mask: CPUID faulting is not available here; the program sees the real CPU\n");
        return;
    }
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d); /* traps into on_segv: proves the mask is live */
    if (!answered || (b & (1u << 16)) || (c & (1u << 11)))
        fprintf(stderr, "cpuid_mask: the mask did not take; the program sees the real CPU\n");
    else if (getenv("CPUID_MASK_VERBOSE"))
        fprintf(stderr, "cpuid_mask: AVX-512, VNNI and AMX hidden from CPUID\n");
}
