// Vite's `?raw` import: a file's text, so tests read tests/vectors/ without Node's own typings.
declare module "*?raw" {
  const text: string;
  export default text;
}
