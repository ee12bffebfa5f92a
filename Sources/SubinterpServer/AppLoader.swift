import Foundation

/// The Python that loads the app in a worker, the same for WSGI and ASGI: `MODULE:APP`, or
/// `MODULE:factory()`, called once in each worker.
enum AppLoader {
    /// Defines `_load_app(spec)` and binds `name` to the app `spec` names.
    static func python(app: String, as name: String) -> String {
        #"""
import importlib as _importlib

def _load_app(spec):
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"the app must be given as MODULE:APP or MODULE:factory(), not {spec!r}")
    target = _importlib.import_module(module_name)
    call = attribute.endswith("()")
    for part in (attribute[:-2] if call else attribute).split("."):
        target = getattr(target, part)
    if call:
        target = target()
    if not callable(target):
        raise TypeError(f"{spec} is a {type(target).__name__}, not an application (a callable)")
    return target

\#(name) = _load_app(\#(pythonString(app)))
"""#
    }

    /// A Python string literal for `text`.
    static func pythonString(_ text: String) -> String {
        var literal = "'"
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": literal += "\\\\"
            case "'": literal += "\\'"
            case "\n": literal += "\\n"
            case "\r": literal += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    literal += String(format: "\\x%02x", scalar.value)
                } else {
                    literal.unicodeScalars.append(scalar)
                }
            }
        }
        return literal + "'"
    }
}
