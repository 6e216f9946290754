import Foundation
import XCTest

/// The README opens with a server and client that must compile and run as written.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeExampleRuns() async throws {
        try requireEventLoop()
        try await readmeExample()
    }

    func testReadmeShowsTheTestedExample() throws {
        let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let root = tests.deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let source = try String(contentsOf: tests.appendingPathComponent("ReadmeExample.swift"), encoding: .utf8)
        let tested = source.components(separatedBy: "// README BEGIN\n")[1].components(separatedBy: "// README END")[0]
        let shown = readme.components(separatedBy: "```swift\n")[1].components(separatedBy: "```")[0]
        XCTAssertEqual(shown, "import SwiftRPC\n\n" + tested)
    }
}
