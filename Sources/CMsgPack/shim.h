#ifndef CMSGPACK_SHIM_H
#define CMSGPACK_SHIM_H
#include <msgpack.h>
#endif
