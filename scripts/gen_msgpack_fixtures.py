#!/usr/bin/env python3
"""Generate the MessagePack fixtures the Swift coder is checked against, byte for byte.

Each case is MessagePack produced by the reference Python implementation (PyPI `msgpack`,
`packb(..., use_bin_type=True)`); Tests/SwiftRPCTests/MessagePackTests.swift holds the equivalent
Swift value for every case name, encodes it, compares the bytes, and decodes them back.

Multi-key maps are dicts in the field order of the matching Swift struct (Python keeps insertion
order; Swift's synthesized Encodable writes fields in declaration order). Swift dictionaries have
no stable order, so cases that are Swift dictionaries have a single key.

Usage:  pip install msgpack && python3 scripts/gen_msgpack_fixtures.py
Writes: Tests/SwiftRPCTests/Fixtures/msgpack_cases.json
"""

import json
import os
import sys

import msgpack


def packb(value, single_float=False):
    return msgpack.packb(value, use_bin_type=True, use_single_float=single_float)


def cases():
    out = []

    def add(name, value, single_float=False):
        out.append({"name": name, "hex": packb(value, single_float).hex()})

    # Integers at every encoding boundary (positive fixint, uint8..64, negative fixint, int8..64).
    ints = {
        "int_0": 0, "int_1": 1, "int_127": 127, "int_128": 128, "int_255": 255, "int_256": 256,
        "int_65535": 65535, "int_65536": 65536, "int_4294967295": 2**32 - 1, "int_4294967296": 2**32,
        "int_neg1": -1, "int_neg32": -32, "int_neg33": -33, "int_neg128": -128, "int_neg129": -129,
        "int_neg32768": -32768, "int_neg32769": -32769, "int_neg2147483648": -2**31,
        "int_neg2147483649": -2**31 - 1, "int64_min": -2**63, "int64_max": 2**63 - 1,
        "uint64_max": 2**64 - 1,
    }
    for name, value in ints.items():
        add(name, value)

    # Strings at every length boundary (fixstr, str8, str16, str32) and non-ASCII UTF-8.
    for n in (0, 1, 31, 32, 255, 256, 65536):
        add(f"str_{n}", "a" * n)
    add("str_unicode", "h\u00e9llo \u2713 \U0001F600")

    # Binary (bin8, bin16, bin32), from [UInt8] and Data.
    for n in (0, 3, 255, 256, 65536):
        add(f"bin_{n}", bytes(i % 251 for i in range(n)))

    # Floats: Swift Float is float32, Double is float64.
    add("float32_1_5", 1.5, single_float=True)
    add("float32_neg_0_25", -0.25, single_float=True)
    add("float64_1_1", 1.1)
    add("float64_neg_1e300", -1e300)
    add("float64_0", 0.0)

    add("bool_true", True)
    add("bool_false", False)
    add("nil", None)

    # Arrays (fixarray, array16) and nesting.
    add("array_ints", [1, 2, 3])
    add("array_16", list(range(16)))
    add("array_empty", [])
    add("array_nested", [[1, 2], [3], []])
    add("array_optional_ints", [1, None, 3])
    add("array_strings", ["a", "bc"])

    # Structs: maps keyed by field name in declaration order.
    add("struct_point", {"x": 1, "y": -2})
    add("struct_empty", {})
    add("struct_16_fields", {chr(ord("a") + i): i for i in range(16)})  # map16 header
    add("struct_optional_nil", {"id": 7})  # `note: String?` is nil and omitted, as JSONEncoder does
    add("struct_optional_set", {"id": 7, "note": "hi"})
    add("struct_nested", {
        "name": "widget",
        "tags": ["a", "b"],
        "origin": {"x": 1, "y": -2},
        "scores": {"k": 1.5},
        "blob": b"\x00\x01\xff",
        "ratio": 0.5,
        "small": 200,
        "flag": True,
        "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
    })
    add("array_of_structs", [{"x": 1, "y": 2}, {"x": 3, "y": 4}])

    # Dictionaries: [String: V] is a map with str keys, [Int: V] a map with int keys.
    add("dict_string_key", {"key": 1})
    add("dict_int_key", {1: "one"})
    add("dict_int_key_negative", {-5: "neg"})
    add("dict_int_key_large", {70000: True})

    # Enums with raw values.
    add("enum_string", "red")
    add("enum_int", 2)

    # Class hierarchy through superEncoder(): the superclass is nested under "super".
    add("class_with_super", {"sub": 1, "super": {"base": 2}})

    # The RPC layer's params array for one argument: [arg].
    add("params_point", [{"x": 1, "y": -2}])
    add("params_int", [5])
    add("params_bin", [b"\x01\x02\x03"])

    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "Tests", "SwiftRPCTests", "Fixtures", "msgpack_cases.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {
        "generator": f"scripts/gen_msgpack_fixtures.py (python msgpack {'.'.join(map(str, msgpack.version))})",
        "cases": cases(),
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote {len(data['cases'])} cases to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
