// Tests are transformed by SWC (fast, no type checking); `npm test` runs `tsc` first for types.
// @kubernetes/client-node 1.x and a few of its dependencies ship only ES modules, which
// Jest's CommonJS loader cannot require, so those are transformed too.
const ESM_ONLY = ['@kubernetes/client-node', 'jsonpath-plus', 'openid-client', 'oauth4webapi', 'jose', 'rfc4648'];

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.(t|j|mj)s$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  globalSetup: '<rootDir>/test/global-setup.ts',
  globalTeardown: '<rootDir>/test/global-teardown.ts',
  testTimeout: 120000,
  verbose: true,
};
