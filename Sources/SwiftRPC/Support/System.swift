internal import Glibc

/// Facts about the machine.
enum System {
    /// CPUs online now (at least 1).
    static var onlineCPUs: Int { max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1) }
}
