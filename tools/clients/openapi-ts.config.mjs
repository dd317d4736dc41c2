// @hey-api/openapi-ts configuration used by `cargo xtask clients` (input and output are given on
// the command line): the fetch client, with response transformers so that date-times become Date
// objects. bigInt is off: int64 fields stay `number`, as JSON.parse reads them anyway.
export default {
  plugins: [
    '@hey-api/client-fetch',
    '@hey-api/typescript',
    { name: '@hey-api/transformers', dates: true, bigInt: false },
    { name: '@hey-api/sdk', transformer: true },
  ],
};
