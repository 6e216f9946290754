// MessagePackEncoderState: the `Encoder` behind MessagePackEncoder. It streams straight into a
// MessagePackWriter; there is no intermediate tree.
//
// `Codable` never says when a container is finished, so the state keeps a stack of open frames:
//   - `.map` / `.array`: a container whose one-byte header was reserved and whose element count is
//     still growing; closing it writes the real header (see MessagePackWriter.patchHeader).
//   - `.slot`: a place where exactly one value goes: the value currently inside `encode(to:)`, or
//     the value behind a `superEncoder()`. An encoder's containers live directly above its slot.
// Frames close in LIFO order: writing to a container first closes every frame above it (they are
// finished: their owner moved on to a sibling), and a value's frames close when its `encode(to:)`
// returns. The one pattern streaming cannot serve, writing to a container again after a later
// sibling was started, throws an EncodingError rather than producing wrong bytes.
//
// Lifecycle: one state per writer, reused; `begin()`/`end()` bracket each top-level value.

#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// Identifies an open frame: its index in the stack and a serial number, so a container that
/// outlived its frame is detected instead of writing into someone else's.
struct MessagePackFrameRef {
    var index: Int
    var id: Int

    /// A container that could not be opened; every write to it throws.
    static let dead = MessagePackFrameRef(index: -1, id: 0)
}

struct MessagePackFrame {
    enum Kind { case array, map, slot }

    var kind: Kind
    var id: Int
    /// `.array`/`.map`: offset of the reserved header byte. `.slot`: where the value starts.
    var offset: Int
    /// `.array`/`.map`: elements (pairs, for a map) so far. `.slot`: 1 once filled.
    var count: Int
    /// `.slot` only: id of the container opened in it, 0 if none.
    var child: Int = 0
    /// `.slot` only: the type of the value being encoded into it, if known.
    var valueType: Any.Type? = nil
    /// `.map` only: whether keys with an `intValue` are written as ints; nil until first needed.
    var intKeys: Bool? = nil
}

/// Marks `[Int: V]`, whose keys the encoder writes as MessagePack ints. Dictionary's `encode(to:)`
/// hands its keys to a keyed container as coding keys whose `intValue` is set both for `[Int: V]`
/// and for numeric keys of `[String: V]` ("5"), so the encoder asks the type of the value that
/// opened the container instead; only the first key with an `intValue` pays for that check.
/// (A wrapper that forwards its own encoder, `try dict.encode(to: encoder)`, therefore gets str
/// keys "5"; the decoder accepts those for `[Int: V]` too.)
protocol MessagePackIntKeyedMap {}

extension Dictionary: MessagePackIntKeyedMap where Key == Int {}

final class MessagePackEncoderState: Encoder {
    /// The writer owns this state (and caches it), so it always outlives it; `unowned(unsafe)`
    /// skips the reference counting `unowned` would do on every access.
    unowned(unsafe) let writer: MessagePackWriter
    // `@exclusivity(unchecked)`: the state is confined to one thread and no access to these
    // properties spans a call that could reach them again, so the runtime checks buy nothing.
    @exclusivity(unchecked) private var frames: [MessagePackFrame] = []
    @exclusivity(unchecked) private var lastID = 0
    /// The slot `encode(to:)` of the value being encoded right now writes into.
    @exclusivity(unchecked) private var currentSlot = MessagePackFrameRef.dead
    /// Coding path of the value being encoded right now.
    @exclusivity(unchecked) private(set) var path: [any CodingKey] = []
    /// A misuse detected where the protocol gives no way to throw (container getters). Kept
    /// apart from a flag because touching an optional EncodingError (a resilient enum) costs
    /// hundreds of instructions.
    private var deferredError: EncodingError?
    @exclusivity(unchecked) private var hasDeferredError = false
    /// True between `begin()` and `end()`, to catch re-entrant use of a cached state.
    @exclusivity(unchecked) private(set) var isActive = false

    init(writer: MessagePackWriter) {
        self.writer = writer
        frames.reserveCapacity(16)
        path.reserveCapacity(16)
    }

    var codingPath: [any CodingKey] { path }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    // MARK: Top level

    /// Encodes one complete value at the writer's end.
    func encodeTopLevel<T: Encodable>(_ value: T) throws {
        begin()
        defer { end() }
        try encodeValue(value)
        closeFrames(downTo: 0)
        if hasDeferredError, let deferredError { throw deferredError }
    }

    private func begin() {
        isActive = true
        if hasDeferredError {
            deferredError = nil
            hasDeferredError = false
        }
        currentSlot = .dead
    }

    /// Leaves the stacks empty for the next value (they already are unless encoding threw).
    private func end() {
        isActive = false
        if !frames.isEmpty { frames.removeAll(keepingCapacity: true) }
        if !path.isEmpty { path.removeAll(keepingCapacity: true) }
        currentSlot = .dead
    }

    // MARK: Values

    /// Writes exactly one value at the writer's end.
    func encodeValue<T: Encodable>(_ value: T) throws {
        if packScalar(value) { return }
        lastID += 1
        let slot = MessagePackFrameRef(index: frames.count, id: lastID)
        frames.append(MessagePackFrame(kind: .slot, id: slot.id, offset: writer.count, count: 0, valueType: T.self))
        let saved = currentSlot
        currentSlot = slot
        defer { currentSlot = saved }
        try value.encode(to: self)
        closeFrames(downTo: slot.index)
    }

    /// Writes a container element (the caller has already written its key and counted it).
    func encodeElement<T: Encodable, K: CodingKey>(_ value: T, extra: [any CodingKey], key: K) throws {
        if packScalar(value) { return }
        let pushed = extra.count + 1
        path.append(contentsOf: extra)
        path.append(key)
        defer { path.removeLast(pushed) }
        try encodeValue(value)
    }

    /// Writes the value of a single-value container or super encoder, whose path is `extra` past
    /// the current one.
    func encodeSlotValue<T: Encodable>(_ value: T, extra: [any CodingKey]) throws {
        if packScalar(value) { return }
        if extra.isEmpty { return try encodeValue(value) }
        path.append(contentsOf: extra)
        defer { path.removeLast(extra.count) }
        try encodeValue(value)
    }

    /// Packs the types MessagePack has a native form for, without going through `encode(to:)`.
    /// `[UInt8]` and `Data` become bin. Returns false for anything else.
    @inline(__always)
    private func packScalar<T: Encodable>(_ value: T) -> Bool { writer.packScalar(value) }

    // MARK: Frames

    private func isOpen(_ ref: MessagePackFrameRef) -> Bool {
        ref.index >= 0 && ref.index < frames.count && frames[ref.index].id == ref.id
    }

    /// Closes (finishes) every frame at index `index` and above.
    private func closeFrames(downTo index: Int) {
        while frames.count > index {
            let frame = frames.removeLast()
            switch frame.kind {
            case .array: writer.patchHeader(at: frame.offset, count: frame.count, isMap: false)
            case .map: writer.patchHeader(at: frame.offset, count: frame.count, isMap: true)
            case .slot: if frame.count == 0 { writer.insertEmptyMap(at: frame.offset) }
            }
        }
    }

    private func misuse(_ message: String, _ codingPath: [any CodingKey]) -> EncodingError {
        EncodingError.invalidValue((), EncodingError.Context(codingPath: codingPath, debugDescription: message))
    }

    private func recordMisuse(_ message: String, _ codingPath: [any CodingKey]) {
        if !hasDeferredError {
            deferredError = misuse(message, codingPath)
            hasDeferredError = true
        }
    }

    private static let closedMessage =
        "MessagePackEncoder streams its output: a container cannot be written to after a later sibling "
        + "value or container was started, nor after the encode(to:) that created it returned."

    /// Readies container `ref` for one more element: closes what sits above it and counts the
    /// element. The caller then writes the key (maps) and the value.
    func beginElement(_ ref: MessagePackFrameRef, _ codingPath: @autoclosure () -> [any CodingKey]) throws {
        guard isOpen(ref) else { throw misuse(Self.closedMessage, codingPath()) }
        closeFrames(downTo: ref.index + 1)
        frames[ref.index].count += 1
    }

    /// Non-throwing `beginElement` for the container getters; records the error instead.
    func tryBeginElement(_ ref: MessagePackFrameRef, _ codingPath: @autoclosure () -> [any CodingKey]) -> Bool {
        guard isOpen(ref) else {
            recordMisuse(Self.closedMessage, codingPath())
            return false
        }
        closeFrames(downTo: ref.index + 1)
        frames[ref.index].count += 1
        return true
    }

    /// Whether map `ref` (open, just readied by `beginElement`) writes keys that have an
    /// `intValue` as ints: true only for the map a `[Int: V]` opened in its own slot.
    func writesIntKeys(_ ref: MessagePackFrameRef) -> Bool {
        if let decided = frames[ref.index].intKeys { return decided }
        var result = false
        let slot = ref.index - 1
        if slot >= 0, frames[slot].kind == .slot, frames[slot].child == ref.id, let type = frames[slot].valueType {
            result = type is any MessagePackIntKeyedMap.Type
        }
        frames[ref.index].intKeys = result
        return result
    }

    /// Opens a container as the value being written right now (after `tryBeginElement`).
    func pushContainer(_ kind: MessagePackFrame.Kind) -> MessagePackFrameRef {
        lastID += 1
        frames.append(MessagePackFrame(kind: kind, id: lastID, offset: writer.reserveHeader(), count: 0))
        return MessagePackFrameRef(index: frames.count - 1, id: lastID)
    }

    /// Opens a slot as the value being written right now, for a super encoder.
    func pushSlot() -> MessagePackFrameRef {
        lastID += 1
        frames.append(MessagePackFrame(kind: .slot, id: lastID, offset: writer.count, count: 0))
        return MessagePackFrameRef(index: frames.count - 1, id: lastID)
    }

    /// The container an encoder bound to `slot` hands out. Asking twice for the same kind returns
    /// the same container (a subclass and its superclass may share one encoder).
    func openContainer(
        in slot: MessagePackFrameRef, _ kind: MessagePackFrame.Kind, _ codingPath: @autoclosure () -> [any CodingKey]
    ) -> MessagePackFrameRef {
        guard isOpen(slot) else {
            recordMisuse(Self.closedMessage, codingPath())
            return .dead
        }
        let child = frames[slot.index].child
        if child != 0 {
            let index = slot.index + 1
            if index < frames.count, frames[index].id == child, frames[index].kind == kind {
                closeFrames(downTo: index + 1)
                return MessagePackFrameRef(index: index, id: child)
            }
            recordMisuse("Requested a \(kind) container from an encoder that already holds a different container.", codingPath())
            return .dead
        }
        if frames[slot.index].count != 0 {
            recordMisuse("Requested a \(kind) container from an encoder that already encoded a single value.", codingPath())
            return .dead
        }
        closeFrames(downTo: slot.index + 1)
        frames[slot.index].count = 1
        let ref = pushContainer(kind)
        frames[slot.index].child = ref.id
        return ref
    }

    /// Claims `slot` for one single value about to be written.
    func fillSlot(_ slot: MessagePackFrameRef, _ codingPath: @autoclosure () -> [any CodingKey]) throws {
        guard isOpen(slot) else { throw misuse(Self.closedMessage, codingPath()) }
        guard frames[slot.index].count == 0 else {
            throw misuse("A single value container can encode only one value.", codingPath())
        }
        closeFrames(downTo: slot.index + 1)
        frames[slot.index].count = 1
    }

    // MARK: Encoder

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let ref = openContainer(in: currentSlot, .map, self.path)
        return KeyedEncodingContainer(
            MessagePackKeyedEncodingContainer<Key>(state: self, ref: ref, depth: path.count, extra: []))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let ref = openContainer(in: currentSlot, .array, self.path)
        return MessagePackUnkeyedEncodingContainer(state: self, ref: ref, depth: path.count, extra: [])
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        MessagePackSingleValueEncodingContainer(state: self, slot: currentSlot, depth: path.count, extra: [])
    }
}
