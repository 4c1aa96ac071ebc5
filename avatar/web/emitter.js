/**
 * emitter.js: the small on/off/once event emitter shared by AvatarClient, PcmSender and
 * LatencyProbe. Emitting goes through the EMIT symbol, so only the classes built on it (which
 * import the symbol) can fire their events.
 */

export const EMIT = Symbol('emit');

/** @typedef {((event: any) => void) & {original?: (event: any) => void}} Listener */

/**
 * Minimal on/off/once emitter; listener exceptions are rethrown asynchronously (console).
 * `Events` maps each event name to what its listeners receive.
 * @template {object} Events
 */
export class Emitter {
  /** @type {Map<keyof Events, Set<Listener>>} */
  #listeners = new Map();

  /**
   * Add a listener; returns a function that removes it.
   * @template {keyof Events} K
   * @param {K} name
   * @param {(event: Events[K]) => void} fn
   * @returns {() => void}
   */
  on(name, fn) {
    if (typeof fn !== 'function') throw new TypeError(`on('${String(name)}', fn): fn must be a function`);
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  /**
   * Remove a listener added with on() or once().
   * @template {keyof Events} K
   * @param {K} name
   * @param {(event: Events[K]) => void} fn
   * @returns {void}
   */
  off(name, fn) {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const entry of set) {
      if (entry === fn || entry.original === fn) set.delete(entry);
    }
  }

  /**
   * Add a listener that runs once; returns a function that removes it.
   * @template {keyof Events} K
   * @param {K} name
   * @param {(event: Events[K]) => void} fn
   * @returns {() => void}
   */
  once(name, fn) {
    /** @type {Listener} */
    const wrapper = (arg) => {
      this.off(name, wrapper);
      fn.call(this, arg);
    };
    wrapper.original = fn;
    return this.on(name, wrapper);
  }

  /**
   * @template {keyof Events} K
   * @param {K} name
   * @param {Events[K]} arg
   * @returns {boolean} whether anyone was listening
   */
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

// -- Type-level only (no run-time effect) ---------------------------------------------------------
// The modules built on Emitter end with a check that their classes match their .d.ts; tsc
// (`make lint`) reports the names of the members that do not.

/**
 * The members of declaration `A` that implementation `I` lacks or types incompatibly: a property
 * must be assignable to the declared one, a method must accept every argument list the declaration
 * allows and return what it promises. `never` when `I` keeps every promise `A` makes.
 * @template I, A
 * @typedef {{[K in keyof A]-?: K extends keyof I ? (Keeps<I[K], A[K]> extends true ? never : K) : K}[keyof A]} Broken
 */

/**
 * @template I, A
 * @typedef {[A] extends [(...args: infer P) => infer R]
 *   ? ([I] extends [(...args: infer Q) => infer S] ? ([P] extends [Q] ? ([S] extends [R] ? true : false) : false) : false)
 *   : ([I] extends [A] ? true : false)} Keeps
 */

/**
 * The public members of implementation `I` that declaration `A` does not mention (EMIT aside:
 * only the modules that import it can fire events).
 * @template I, A
 * @typedef {Exclude<keyof I, keyof A | typeof EMIT>} Undeclared
 */

/**
 * The static side of class `C`.
 * @template C
 * @typedef {Omit<C, 'prototype'>} Statics
 */

/**
 * Compiles only when `T` is `never` (the error names what `T` is instead).
 * @template {never} T
 * @typedef {T} None
 */
