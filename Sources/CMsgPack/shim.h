#ifndef CMSGPACK_SHIM_H
#define CMSGPACK_SHIM_H
#include <msgpack.h>
/* The validator and header reader the C core uses too: one set of MessagePack rules. */
#include "msgpack_rules.h"
#endif
