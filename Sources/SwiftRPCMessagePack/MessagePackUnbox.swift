// MessagePackUnbox: reads Swift scalars out of unpacked msgpack_object nodes.
//
// Lenient where MessagePack has several spellings of one value, strict where data would be lost:
//   - any int encoding (fixint, uint8..64, int8..64) decodes into any integer type it fits;
//     one that does not fit is an error, never a truncation;
//   - Double accepts float32, float64 and ints; Float accepts the same but rejects a float64 whose
//     magnitude overflows Float;
//   - String requires str holding valid UTF-8; [UInt8] and Data take bin (or, through the generic
//     path, an array of small ints).
// Failures are a small typed error without a coding path; the containers, which know the path,
// turn them into DecodingError.

#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
internal import CMsgPack

typealias MessagePackObject = UnsafePointer<msgpack_object>

/// A nil node, for `superDecoder(forKey:)` of a missing key and for a state not yet pointed at a
/// tree. `nonisolated(unsafe)` is safe: the global is written exactly once, by Swift's thread-safe
/// lazy global initialization, and only ever read afterwards.
nonisolated(unsafe) let messagePackNilObject: MessagePackObject = {
    let object = UnsafeMutablePointer<msgpack_object>.allocate(capacity: 1)
    object.initialize(to: msgpack_object())  // all-zero: type MSGPACK_OBJECT_NIL
    return UnsafePointer(object)
}()

/// Why a node could not be read as the requested type.
enum MessagePackUnboxFailure: Error {
    case mismatch(found: String)
    case foundNil
    case corrupted(String)

    /// The DecodingError for a failed read of `type` at `codingPath`.
    func decodingError(_ type: Any.Type, _ codingPath: [any CodingKey]) -> DecodingError {
        switch self {
        case .mismatch(let found):
            return .typeMismatch(type, .init(
                codingPath: codingPath, debugDescription: "Expected to decode \(type) but found MessagePack \(found) instead."))
        case .foundNil:
            return .valueNotFound(type, .init(
                codingPath: codingPath, debugDescription: "Expected \(type) value but found MessagePack nil instead."))
        case .corrupted(let message):
            return .dataCorrupted(.init(codingPath: codingPath, debugDescription: message))
        }
    }
}

enum MessagePackUnbox {
    /// The MessagePack type of `object`, for error messages.
    static func typeName(_ object: MessagePackObject) -> String {
        switch object.pointee.type {
        case MSGPACK_OBJECT_NIL: "nil"
        case MSGPACK_OBJECT_BOOLEAN: "bool"
        case MSGPACK_OBJECT_POSITIVE_INTEGER, MSGPACK_OBJECT_NEGATIVE_INTEGER: "int"
        case MSGPACK_OBJECT_FLOAT32: "float32"
        case MSGPACK_OBJECT_FLOAT64: "float64"
        case MSGPACK_OBJECT_STR: "str"
        case MSGPACK_OBJECT_BIN: "bin"
        case MSGPACK_OBJECT_ARRAY: "array"
        case MSGPACK_OBJECT_MAP: "map"
        case MSGPACK_OBJECT_EXT: "ext"
        default: "unknown type \(object.pointee.type.rawValue)"
        }
    }

    @inline(__always)
    private static func other(_ object: MessagePackObject) -> MessagePackUnboxFailure {
        object.pointee.type == MSGPACK_OBJECT_NIL ? .foundNil : .mismatch(found: typeName(object))
    }

    static func integer<T: FixedWidthInteger>(_ object: MessagePackObject, _ type: T.Type) throws(MessagePackUnboxFailure) -> T {
        switch object.pointee.type {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            let value = object.pointee.via.u64
            guard let result = T(exactly: value) else { throw .corrupted("Number \(value) does not fit in \(T.self).") }
            return result
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            let value = object.pointee.via.i64
            guard let result = T(exactly: value) else { throw .corrupted("Number \(value) does not fit in \(T.self).") }
            return result
        default:
            throw other(object)
        }
    }

    static func double(_ object: MessagePackObject) throws(MessagePackUnboxFailure) -> Double {
        switch object.pointee.type {
        case MSGPACK_OBJECT_FLOAT64, MSGPACK_OBJECT_FLOAT32: return object.pointee.via.f64
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return Double(object.pointee.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return Double(object.pointee.via.i64)
        default: throw other(object)
        }
    }

    static func float(_ object: MessagePackObject) throws(MessagePackUnboxFailure) -> Float {
        switch object.pointee.type {
        case MSGPACK_OBJECT_FLOAT32:
            return Float(object.pointee.via.f64)  // msgpack-c widened it; narrowing back is exact
        case MSGPACK_OBJECT_FLOAT64:
            let value = object.pointee.via.f64
            let result = Float(value)
            guard result.isFinite || !value.isFinite else {
                throw .corrupted("Number \(value) does not fit in Float.")
            }
            return result
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return Float(object.pointee.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return Float(object.pointee.via.i64)
        default: throw other(object)
        }
    }

    static func bool(_ object: MessagePackObject) throws(MessagePackUnboxFailure) -> Bool {
        guard object.pointee.type == MSGPACK_OBJECT_BOOLEAN else { throw other(object) }
        return object.pointee.via.boolean
    }

    /// The UTF-8 bytes of a str node (they point into the input).
    @inline(__always)
    static func utf8(_ object: MessagePackObject) -> UnsafeBufferPointer<UInt8> {
        let str = object.pointee.via.str
        return UnsafeBufferPointer(start: UnsafeRawPointer(str.ptr)?.assumingMemoryBound(to: UInt8.self), count: Int(str.size))
    }

    static func string(_ object: MessagePackObject) throws(MessagePackUnboxFailure) -> String {
        guard object.pointee.type == MSGPACK_OBJECT_STR else { throw other(object) }
        guard let result = String(validating: utf8(object), as: UTF8.self) else {
            throw .corrupted("MessagePack str is not valid UTF-8.")
        }
        return result
    }

    /// The payload of a bin node (it points into the input).
    @inline(__always)
    static func binary(_ object: MessagePackObject) -> UnsafeRawBufferPointer {
        let bin = object.pointee.via.bin
        return UnsafeRawBufferPointer(start: bin.ptr, count: Int(bin.size))
    }

    /// Decodes `object` as `kind`, which must be `T`'s scalar kind (see `MessagePackScalar`).
    /// `[UInt8]`/`Data` stored as an array are not handled here: the generic path reads them.
    ///
    /// Generic code pays for every metadata it has to build at run time; this returns `T`
    /// straight from a switch, so it builds none (no Optional<T>, no buffer of T).
    @inline(__always)
    static func scalar<T>(_ object: MessagePackObject, _ kind: MessagePackScalar,
                          as type: T.Type) throws(MessagePackUnboxFailure) -> T {
        switch kind {
        case .string:
            var text = try string(object)
            return messagePackMoveCast(&text, to: T.self, leaving: "")
        case .int: return messagePackIdentityCast(try integer(object, Int.self), to: T.self)
        case .double: return messagePackIdentityCast(try double(object), to: T.self)
        case .bool: return messagePackIdentityCast(try bool(object), to: T.self)
        case .bytes:
            guard object.pointee.type == MSGPACK_OBJECT_BIN else { throw other(object) }
            var bytes = [UInt8](binary(object))
            return messagePackMoveCast(&bytes, to: T.self, leaving: [])
        case .data:
            guard object.pointee.type == MSGPACK_OBJECT_BIN else { throw other(object) }
            var data = Data(binary(object))
            return messagePackMoveCast(&data, to: T.self, leaving: Data())
        case .int64: return messagePackIdentityCast(try integer(object, Int64.self), to: T.self)
        case .uint64: return messagePackIdentityCast(try integer(object, UInt64.self), to: T.self)
        case .int32: return messagePackIdentityCast(try integer(object, Int32.self), to: T.self)
        case .uint32: return messagePackIdentityCast(try integer(object, UInt32.self), to: T.self)
        case .uint: return messagePackIdentityCast(try integer(object, UInt.self), to: T.self)
        case .float: return messagePackIdentityCast(try float(object), to: T.self)
        case .int16: return messagePackIdentityCast(try integer(object, Int16.self), to: T.self)
        case .uint16: return messagePackIdentityCast(try integer(object, UInt16.self), to: T.self)
        case .int8: return messagePackIdentityCast(try integer(object, Int8.self), to: T.self)
        case .uint8: return messagePackIdentityCast(try integer(object, UInt8.self), to: T.self)
        }
    }
}

/// The types MessagePack has a native form for: decoded without going through `init(from:)`.
enum MessagePackScalar {
    case string, int, double, bool, bytes, data
    case int64, uint64, int32, uint32, uint, float, int16, uint16, int8, uint8

    /// The kind of `type`, or nil when it decodes through `init(from:)`. Not generic, so
    /// asking builds no metadata.
    @inline(__always)
    init?(_ type: Any.Type) {
        let id = ObjectIdentifier(type)
        if id == MessagePackTypeID.bytes { self = .bytes }
        else if id == ObjectIdentifier(String.self) { self = .string }
        else if id == ObjectIdentifier(Int.self) { self = .int }
        else if id == ObjectIdentifier(Double.self) { self = .double }
        else if id == ObjectIdentifier(Bool.self) { self = .bool }
        else if id == ObjectIdentifier(Data.self) { self = .data }
        else if id == ObjectIdentifier(Int64.self) { self = .int64 }
        else if id == ObjectIdentifier(UInt64.self) { self = .uint64 }
        else if id == ObjectIdentifier(Int32.self) { self = .int32 }
        else if id == ObjectIdentifier(UInt32.self) { self = .uint32 }
        else if id == ObjectIdentifier(UInt.self) { self = .uint }
        else if id == ObjectIdentifier(Float.self) { self = .float }
        else if id == ObjectIdentifier(Int16.self) { self = .int16 }
        else if id == ObjectIdentifier(UInt16.self) { self = .uint16 }
        else if id == ObjectIdentifier(Int8.self) { self = .int8 }
        else if id == ObjectIdentifier(UInt8.self) { self = .uint8 }
        else { return nil }
    }

    /// The kind of `type` when `object` can be read as that scalar directly; nil when `type`
    /// decodes through `init(from:)`, or is `[UInt8]`/`Data` held in an array of small ints.
    @inline(__always)
    static func direct(_ type: Any.Type, for object: MessagePackObject) -> MessagePackScalar? {
        guard let kind = MessagePackScalar(type) else { return nil }
        if (kind == .bytes || kind == .data) && object.pointee.type == MSGPACK_OBJECT_ARRAY { return nil }
        return kind
    }
}
