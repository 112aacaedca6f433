/* LD_PRELOAD library: this process sees a CPU without AVX-512 and VNNI (an AVX2 + FMA x86 CPU).
 *
 * Libraries such as onnxruntime's MLAS choose their kernels from the CPUID instruction, with no
 * option to cap the instruction set. Linux can make CPUID trap (the cpuid_fault CPU flag,
 * arch_prctl(ARCH_SET_CPUID, 0)): each CPUID then raises SIGSEGV, whose handler here executes
 * the real CPUID, clears the AVX-512, VNNI and AMX feature bits and resumes after the
 * instruction. The setting is per thread, inherited by threads created later and reset by
 * execve, so the constructor runs before any library starts a thread, and a child process
 * inherits the mask through LD_PRELOAD in its environment. XGETBV cannot be trapped; libraries
 * test the CPUID feature bits before XCR0, so clearing the bits is enough. The dynamic loader
 * (glibc's own string functions) has read CPUID before this constructor and is not masked.
 *
 * A program that installs its own SIGSEGV handler later (Python's faulthandler, for one) would
 * replace this one, so sigaction() is interposed for SIGSEGV: the program's action is kept aside
 * and called for real faults, and this handler stays in place (glibc's signal() bypasses the
 * interposition; Python and the libraries measured use sigaction). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012

/* Leaf 7 sub-leaf 0 */
#define L7_EBX_CLEAR ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | \
                      (1u << 30) | (1u << 31))  /* AVX512 F, DQ, IFMA, PF, ER, CD, BW, VL */
#define L7_ECX_CLEAR ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))
                      /* AVX512 VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
#define L7_EDX_CLEAR ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | \
                      (1u << 25))  /* AVX512 4VNNIW, 4FMAPS, VP2INTERSECT; AMX-BF16; AVX512-FP16; AMX-TILE, -INT8 */
/* Leaf 7 sub-leaf 1 */
#define L71_EAX_CLEAR ((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23))  /* AVX-VNNI, AVX512-BF16, AMX-FP16, AVX-IFMA */
#define L71_EDX_CLEAR ((1u << 4) | (1u << 5) | (1u << 10) | (1u << 19))
                      /* AVX-VNNI-INT8, AVX-NE-CONVERT, AVX-VNNI-INT16, AVX10 */

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static struct sigaction program_action;  /* the program's own SIGSEGV action: SIG_DFL until it sets one */
static int installed;

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || !installed) return real_sigaction(sig, act, old);
    if (old) *old = program_action;
    if (act) program_action = *act;
    return 0;
}

/* A fault that is not CPUID: the program's handler, or the default action (core dump). */
static void real_fault(int sig, siginfo_t *info, void *context) {
    if (program_action.sa_flags & SA_SIGINFO) {
        program_action.sa_sigaction(sig, info, context);
    } else if (program_action.sa_handler != SIG_DFL && program_action.sa_handler != SIG_IGN) {
        program_action.sa_handler(sig);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(sig, &dfl, NULL);
        raise(sig);
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip == NULL || ip[0] != 0x0F || ip[1] != 0xA2) {
        real_fault(sig, info, context);
        return;
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        b &= ~L7_EBX_CLEAR; c &= ~L7_ECX_CLEAR; d &= ~L7_EDX_CLEAR;
    } else if (leaf == 7 && sub == 1) {
        a &= ~L71_EAX_CLEAR; d &= ~L71_EDX_CLEAR;
    }
    /* CPUID writes the low 32 bits and zeroes the upper half of each 64-bit register */
    r[REG_RAX] = a; r[REG_RBX] = b; r[REG_RCX] = c; r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_cpuid(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (real_sigaction == NULL || real_sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid(0) != 0) {
        perror("cpuid_mask: cannot make CPUID trap (needs Linux on a CPU with the cpuid_fault flag)");
        _exit(3);
    }
    installed = 1;
}
