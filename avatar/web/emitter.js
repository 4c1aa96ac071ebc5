/**
 * emitter.js: the small on/off/once event emitter shared by AvatarClient, PcmSender and
 * LatencyProbe. Emitting goes through the EMIT symbol, so only the classes built on it (which
 * import the symbol) can fire their events.
 */

export const EMIT = Symbol('emit');

/** Minimal on/off/once emitter; listener exceptions are rethrown asynchronously (console). */
export class Emitter {
  #listeners = new Map();

  on(name, fn) {
    if (typeof fn !== 'function') throw new TypeError(`on('${name}', fn): fn must be a function`);
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const entry of set) {
      if (entry === fn || entry.original === fn) set.delete(entry);
    }
  }

  once(name, fn) {
    const wrapper = (arg) => {
      this.off(name, wrapper);
      fn.call(this, arg);
    };
    wrapper.original = fn;
    return this.on(name, wrapper);
  }

  /** @returns {boolean} whether anyone was listening */
  [EMIT](name, arg) {
    const set = this.#listeners.get(name);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) {
      try {
        fn.call(this, arg);
      } catch (err) {
        // One faulty listener must not stop the others, nor the protocol handling around it.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    return true;
  }
}
