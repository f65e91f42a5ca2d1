/* A stand-in for the NVIDIA driver's libnvidia-ml with NVML's C ABI, for machines without a
 * GPU: two devices. Device 0 reports 37% busy and 2 GiB of 80 GiB in use; device 1 is a MIG
 * instance, which cannot report utilisation (NVML_ERROR_NOT_SUPPORTED) but reports memory,
 * 1 GiB of 10 GiB. A handle is the device's index + 1. */

#include <stdint.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3

typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;

static const unsigned long long GIB = 1024ULL * 1024ULL * 1024ULL;

int nvmlInit_v2(void) { return NVML_SUCCESS; }

int nvmlDeviceGetCount_v2(unsigned int *count) {
    *count = 2;
    return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    if (index > 1) return NVML_ERROR_INVALID_ARGUMENT;
    *device = (void *)(uintptr_t)(index + 1);
    return NVML_SUCCESS;
}

int nvmlDeviceGetUtilizationRates(void *device, nvmlUtilization_t *util) {
    if ((uintptr_t)device != 1) return NVML_ERROR_NOT_SUPPORTED;
    util->gpu = 37;
    util->memory = 12;
    return NVML_SUCCESS;
}

int nvmlDeviceGetMemoryInfo(void *device, nvmlMemory_t *memory) {
    uintptr_t index = (uintptr_t)device - 1;
    if (index > 1) return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = index == 0 ? 80 * GIB : 10 * GIB;
    memory->used = index == 0 ? 2 * GIB : 1 * GIB;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}
