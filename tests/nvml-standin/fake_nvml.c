/* A stand-in libnvidia-ml.so.1 for tests: exactly the NVML entry points that
 * ds01::gpu::nvml::query reaches through nvml-wrapper, with deterministic answers.
 *
 * Build: gcc -shared -fPIC -o <dir>/libnvidia-ml.so.1 fake_nvml.c
 * Configured at nvmlInit_v2 from the environment:
 *   FAKE_NVML_GPUS=N        number of GPUs (default 4, at most 64)
 *   FAKE_NVML_MIG=2:3,3:2   GPU 2 has MIG mode on with 3 instances, GPU 3 with 2
 *   FAKE_NVML_FAIL_INIT=1   nvmlInit_v2 fails with NVML_ERROR_DRIVER_NOT_LOADED
 *
 * GPU i: UUID GPU-00000000-0000-0000-0000-<i, 12 hex digits>, minor i, 40960 MiB.
 * MIG j of GPU i: UUID MIG-<i, 8 hex>-0000-0000-0000-<j, 12 hex>, GPU instance j+1, compute
 * instance 0, profile (j % 3 + 1)g (its attributes' slice counts and its name say so). A handle encodes (gpu, mig): 0x1000 + gpu * 0x100 + (mig + 1), mig -1 = physical.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

enum {
    OK = 0, UNINITIALIZED = 1, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6,
    INSUFFICIENT_SIZE = 7, DRIVER_NOT_LOADED = 9
};
#define MAX_GPUS 64
#define MAX_MIGS 7

static int inited, ngpus, nmigs[MAX_GPUS]; /* nmigs > 0: MIG mode on */

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

nvmlReturn_t nvmlInit_v2(void) {
    if (env_int("FAKE_NVML_FAIL_INIT", 0)) return DRIVER_NOT_LOADED;
    ngpus = env_int("FAKE_NVML_GPUS", 4);
    if (ngpus < 0) ngpus = 0;
    if (ngpus > MAX_GPUS) ngpus = MAX_GPUS;
    memset(nmigs, 0, sizeof nmigs);
    const char *p = getenv("FAKE_NVML_MIG");
    while (p && *p) {
        char *end;
        long g = strtol(p, &end, 10), n = 0;
        if (*end == ':') n = strtol(end + 1, &end, 10);
        if (g >= 0 && g < MAX_GPUS) nmigs[g] = n < 0 ? 0 : n > MAX_MIGS ? MAX_MIGS : (int)n;
        p = strchr(end, ',');
        if (p) p++;
    }
    inited = 1;
    return OK;
}

nvmlReturn_t nvmlShutdown(void) {
    if (!inited) return UNINITIALIZED;
    inited = 0;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case OK: return "Success";
    case UNINITIALIZED: return "Uninitialized";
    case INVALID_ARGUMENT: return "Invalid Argument";
    case NOT_SUPPORTED: return "Not Supported";
    case NOT_FOUND: return "Not Found";
    case INSUFFICIENT_SIZE: return "Insufficient Size";
    case DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

/* nvml-wrapper reads it at init (optional there) to pick its field id numbering. */
nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int len) {
    if (!inited) return UNINITIALIZED;
    if (!buf) return INVALID_ARGUMENT;
    return snprintf(buf, len, "550.54.15") < (int)len ? OK : INSUFFICIENT_SIZE;
}

static nvmlDevice_t handle(int gpu, int mig) {
    return (nvmlDevice_t)(uintptr_t)(0x1000 + gpu * 0x100 + mig + 1);
}

/* Decodes a handle into (gpu, mig); returns nonzero when it is not a live device. */
static int decode(nvmlDevice_t d, int *gpu, int *mig) {
    uintptr_t v = (uintptr_t)d;
    if (!inited || v < 0x1000) return 1;
    *gpu = (int)((v - 0x1000) / 0x100);
    *mig = (int)((v - 0x1000) % 0x100) - 1;
    return *gpu >= ngpus || *mig >= nmigs[*gpu];
}

#define DEVICE(d)                                                \
    int gpu, mig;                                                \
    if (!inited) return UNINITIALIZED;                           \
    if (decode(d, &gpu, &mig)) return INVALID_ARGUMENT;

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!inited) return UNINITIALIZED;
    if (!count) return INVALID_ARGUMENT;
    *count = (unsigned int)ngpus;
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *out) {
    if (!inited) return UNINITIALIZED;
    if (!out || index >= (unsigned int)ngpus) return INVALID_ARGUMENT;
    *out = handle((int)index, -1);
    return OK;
}

static nvmlReturn_t put(char *buf, unsigned int len, const char *s) {
    if (!buf) return INVALID_ARGUMENT;
    if (strlen(s) >= len) return INSUFFICIENT_SIZE;
    strcpy(buf, s);
    return OK;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *buf, unsigned int len) {
    DEVICE(d)
    char s[64];
    if (mig < 0)
        snprintf(s, sizeof s, "GPU-00000000-0000-0000-0000-%012x", (unsigned)gpu);
    else
        snprintf(s, sizeof s, "MIG-%08x-0000-0000-0000-%012x", (unsigned)gpu, (unsigned)mig);
    return put(buf, len, s);
}

/* MIG j's profile has (j % 3) + 1 compute slices: 1g.10gb, 2g.20gb, 3g.40gb, 1g.10gb, ... */
static unsigned int mig_slices(int mig) { return (unsigned int)(mig % 3) + 1; }

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *buf, unsigned int len) {
    DEVICE(d)
    char s[64];
    if (mig < 0)
        snprintf(s, sizeof s, "NVIDIA Stand-in A100");
    else
        snprintf(s, sizeof s, "NVIDIA Stand-in A100 MIG %ug.%ugb", mig_slices(mig), mig_slices(mig) * 10);
    return put(buf, len, s);
}

typedef struct {
    unsigned int multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount,
        sharedJpegCount, sharedOfaCount, gpuInstanceSliceCount, computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t d, nvmlDeviceAttributes_t *a) {
    DEVICE(d)
    if (!a) return INVALID_ARGUMENT;
    memset(a, 0, sizeof *a);
    unsigned int slices = mig < 0 ? 7 : mig_slices(mig);
    a->multiprocessorCount = 14 * slices;
    a->gpuInstanceSliceCount = slices;
    a->computeInstanceSliceCount = slices;
    a->memorySizeMB = 40960ULL * slices / 7;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    DEVICE(d)
    if (!minor) return INVALID_ARGUMENT;
    if (mig >= 0) return NOT_SUPPORTED;
    *minor = (unsigned int)gpu;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    DEVICE(d)
    if (!m) return INVALID_ARGUMENT;
    m->total = 40960ULL << 20;
    m->reserved = 512ULL << 20;
    m->used = 0;
    m->free = m->total - m->reserved;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    DEVICE(d)
    if (!current || !pending) return INVALID_ARGUMENT;
    if (mig >= 0) return NOT_SUPPORTED;
    *current = *pending = nmigs[gpu] > 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    DEVICE(d)
    if (!count) return INVALID_ARGUMENT;
    if (mig >= 0) return NOT_SUPPORTED;
    *count = nmigs[gpu] > 0 ? MAX_MIGS : 0;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *out) {
    DEVICE(d)
    if (!out || mig >= 0 || nmigs[gpu] == 0 || index >= MAX_MIGS) return INVALID_ARGUMENT;
    if (index >= (unsigned int)nmigs[gpu]) return NOT_FOUND;
    *out = handle(gpu, (int)index);
    return OK;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    DEVICE(d)
    if (!id || mig < 0) return INVALID_ARGUMENT;
    *id = (unsigned int)mig + 1;
    return OK;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) {
    DEVICE(d)
    if (!id || mig < 0) return INVALID_ARGUMENT;
    *id = 0;
    return OK;
}
