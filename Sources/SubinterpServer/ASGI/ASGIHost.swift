import CPython

/// The C functions a worker calls (asgi.h `cpy_asgi_host`), registered once per process. They
/// run on the worker's thread with its GIL held and forward to the Swift objects behind the
/// pointers: an `ASGIExchange` (retained by the worker while it refers to it) or an
/// `ASGIWorkerControl` (unretained; it outlives its worker's loop).
enum ASGIHost {
    static let installed: Void = {
        var host = cpy_asgi_host(
            send: { exchange, message in
                Unmanaged<ASGIExchange>.fromOpaque(exchange!).takeUnretainedValue().send(message!)
            },
            demand: { exchange in
                Unmanaged<ASGIExchange>.fromOpaque(exchange!).takeUnretainedValue().demand()
            },
            finish: { exchange, outcome, detail, length in
                let text = detail.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self) }
                let exchange = Unmanaged<ASGIExchange>.fromOpaque(exchange!).takeUnretainedValue()
                exchange.worker.finished(exchange, outcome: outcome, detail: text)
            },
            release: { exchange in
                Unmanaged<ASGIExchange>.fromOpaque(exchange!).release()
            },
            control: { context, kind, text, length in
                let message = String(decoding: UnsafeRawBufferPointer(start: text, count: length), as: UTF8.self)
                Unmanaged<ASGIWorkerControl>.fromOpaque(context!).takeUnretainedValue().report(kind, message)
            },
            iteration: { context in
                Unmanaged<ASGIWorkerControl>.fromOpaque(context!).takeUnretainedValue().iterationEnded()
            })
        cpy_asgi_set_host(&host)
    }()
}
